// Package glob implements the pattern matcher Mongoose OS uses for RPC method
// names, RPC ACL entries, conf_acl and hidden_files (mongoose mg_match_prefix).
//
// Syntax: '*' matches any run of characters except '/', '**' matches
// anything, '?' matches one character, '$' anchors the end, and '|' or ','
// separate alternatives. Matching is case-insensitive.
package glob

import (
	"iter"
	"strings"
)

// Match reports whether the whole of s matches pattern (any of its
// alternatives).
func Match(pattern, s string) bool {
	if pattern == "" {
		return s == ""
	}
	for alt := range alternatives(pattern) {
		if matchOne(alt, s, true) == len(s) {
			return true
		}
	}
	return false
}

// MatchPrefix returns the length of the longest prefix of s matched by the
// first alternative of pattern that matches, or -1 if none does. A pattern
// matches a prefix unless it ends with '$'.
func MatchPrefix(pattern, s string) int {
	for alt := range alternatives(pattern) {
		if n := matchOne(alt, s, false); n >= 0 {
			return n
		}
	}
	if pattern == "" {
		return 0
	}
	return -1
}

func alternatives(pattern string) iter.Seq[string] {
	return strings.FieldsFuncSeq(pattern, func(r rune) bool { return r == '|' || r == ',' })
}

// Pattern tokens.
const (
	tokLit   = iota // one character, case-insensitive
	tokOne          // '?': any one character
	tokStar         // '*': any run without '/'
	tokStars        // '**': any run
)

type token struct {
	kind int
	c    byte
}

// matchOne matches a single alternative against s and returns the length
// of the longest prefix of s it matches (only all of s when whole is set
// or the pattern ends with '$'), or -1. It simulates the pattern as a
// finite automaton, one pass over s: time O(len(p)*len(s)) whatever the
// wildcards, where backtracking would be exponential.
func matchOne(p string, s string, whole bool) int {
	anchored := whole
	if strings.HasSuffix(p, "$") {
		p, anchored = p[:len(p)-1], true
	}
	toks := make([]token, 0, len(p))
	for i := 0; i < len(p); i++ {
		switch {
		case p[i] == '?':
			toks = append(toks, token{kind: tokOne})
		case p[i] == '*' && i+1 < len(p) && p[i+1] == '*':
			toks = append(toks, token{kind: tokStars})
			i++
		case p[i] == '*':
			toks = append(toks, token{kind: tokStar})
		default:
			toks = append(toks, token{kind: tokLit, c: lower(p[i])})
		}
	}
	n := len(toks)
	cur, next := make([]bool, n+1), make([]bool, n+1)
	cur[0] = true
	best := -1
	for j := 0; ; j++ {
		// A star may match nothing: its successor is reachable too.
		alive := false
		for i := 0; i <= n; i++ {
			if !cur[i] {
				continue
			}
			alive = true
			if i < n && toks[i].kind >= tokStar {
				cur[i+1] = true
			}
		}
		if !alive {
			return best
		}
		if cur[n] && (!anchored || j == len(s)) {
			best = j
		}
		if j == len(s) {
			return best
		}
		c := lower(s[j])
		clear(next)
		for i := 0; i < n; i++ {
			if !cur[i] {
				continue
			}
			switch t := toks[i]; t.kind {
			case tokLit:
				next[i+1] = next[i+1] || t.c == c
			case tokOne:
				next[i+1] = true
			case tokStar:
				next[i] = next[i] || c != '/'
			case tokStars:
				next[i] = true
			}
		}
		cur, next = next, cur
	}
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
