package glob

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"Sys.GetInfo", "sys.getinfo", true},
		{"Sys.*", "Sys.Reboot", true},
		{"Sys.*", "FS.List", false},
		{"*", "anything", true},
		{"*", "a/b", false},
		{"**", "a/b", true},
		{"wifi.*", "wifi.sta.ssid", true},
		{"FS.*|Sys.*", "Sys.GetInfo", true},
		{"FS.*,Sys.*", "fs.put", true},
		{"FS.?et", "FS.Get", true},
		{"FS.?et", "FS.Gett", false},
		{"*.json", "conf9.json", true},
		{"*.json$", "conf9.json", true},
		{"conf*", "conf9.json", true},
		{"", "", true},
		{"", "x", false},
		{"a*b", "aXXb", true},
		{"a*b", "aXXc", false},
		{"a|ab", "ab", true}, // any alternative matching the whole string
		{"*.pem", "key.pem.old", false},
		{"********0", strings.Repeat("a", 4096), false}, // exponential with backtracking
		{"*a*a*a*b", strings.Repeat("a", 4096), false},
		{"**a**a**a**", strings.Repeat("a", 4096), true},
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.s); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func TestMatchPrefix(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       int
	}{
		{"rpc_auth.txt|*.pem", "rpc_auth.txt.bak", len("rpc_auth.txt")},
		{"rpc_auth.txt|*.pem", "key.pem.old", len("key.pem")},
		{"*.pem$", "key.pem.old", -1},
		{"*.pem", "index.html", -1},
		{"secret", "secret/x", len("secret")},
		{"", "x", 0},
	}
	for _, tt := range tests {
		if got := MatchPrefix(tt.pattern, tt.s); got != tt.want {
			t.Errorf("MatchPrefix(%q, %q) = %d, want %d", tt.pattern, tt.s, got, tt.want)
		}
	}
}

// naive is the backtracking matcher, the reference for short inputs.
func naive(p, s string) bool {
	if p == "" {
		return s == ""
	}
	if p == "$" {
		return s == ""
	}
	switch {
	case strings.HasPrefix(p, "**"):
		for k := 0; k <= len(s); k++ {
			if naive(p[2:], s[k:]) {
				return true
			}
		}
		return false
	case p[0] == '*':
		for k := 0; k <= len(s); k++ {
			if naive(p[1:], s[k:]) {
				return true
			}
			if k < len(s) && s[k] == '/' {
				return false
			}
		}
		return false
	case s == "":
		return false
	case p[0] == '?' || lower(p[0]) == lower(s[0]):
		return naive(p[1:], s[1:])
	}
	return false
}

func FuzzMatch(f *testing.F) {
	f.Add("Sys.*|FS.**", "Sys.GetInfo")
	f.Add("********0", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Add("a*/b$", "aX/b")
	f.Fuzz(func(t *testing.T, p, s string) {
		n := MatchPrefix(p, s)
		if n > len(s) || n < -1 {
			t.Fatalf("MatchPrefix(%q, %q) = %d", p, s, n)
		}
		// Against the backtracking reference, on inputs it can afford.
		if len(p) <= 8 && len(s) <= 16 && !strings.ContainsAny(p, "|,") {
			if got, want := Match(p, s), naive(p, s); got != want {
				t.Fatalf("Match(%q, %q) = %v, reference %v", p, s, got, want)
			}
		}
	})
}
