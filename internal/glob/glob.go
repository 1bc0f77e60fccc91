// Package glob implements the pattern matcher Mongoose OS uses for RPC method
// names, RPC ACL entries, conf_acl and hidden_files (mongoose mg_match_prefix).
//
// Syntax: '*' matches any run of characters except '/', '**' matches
// anything, '?' matches one character, '$' anchors the end, and '|' or ','
// separate alternatives. Matching is case-insensitive.
package glob

import "strings"

// Match reports whether the whole of s matches pattern.
func Match(pattern, s string) bool {
	return MatchPrefix(pattern, s) == len(s)
}

// MatchPrefix returns the length of the longest prefix of s matched by the
// first alternative of pattern that matches, or -1 if none does. A pattern
// matches a prefix unless it ends with '$'.
func MatchPrefix(pattern, s string) int {
	for alt := range strings.FieldsFuncSeq(pattern, func(r rune) bool { return r == '|' || r == ',' }) {
		if n := matchOne(alt, s); n >= 0 {
			return n
		}
	}
	if pattern == "" {
		return 0
	}
	return -1
}

// matchOne matches a single alternative against a prefix of s.
func matchOne(p, s string) int {
	i, j := 0, 0
	for i < len(p) {
		switch {
		case p[i] == '?' && j < len(s):
			i++
			j++
		case p[i] == '$' && i == len(p)-1:
			if j == len(s) {
				return j
			}
			return -1
		case p[i] == '*':
			double := i+1 < len(p) && p[i+1] == '*'
			if double {
				i += 2
			} else {
				i++
			}
			// Try the longest run first, as mongoose does.
			k := j
			for k < len(s) && (double || s[k] != '/') {
				k++
			}
			if i == len(p) {
				return k
			}
			for ; k >= j; k-- {
				if n := matchOne(p[i:], s[k:]); n >= 0 {
					return k + n
				}
			}
			return -1
		case j < len(s) && lower(p[i]) == lower(s[j]):
			i++
			j++
		default:
			return -1
		}
	}
	return j
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// MatchList applies an access list such as conf_acl, an RPC ACL user list
// or http.upload_acl: comma-separated globs, each optionally prefixed with
// '+' (allow) or '-' (deny). The first matching entry decides; when none
// matches, access is denied.
func MatchList(list, s string) bool {
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		allow := e[0] != '-'
		if e[0] == '-' || e[0] == '+' {
			e = e[1:]
		}
		if Match(e, s) {
			return allow
		}
	}
	return false
}
