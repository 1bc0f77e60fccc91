package glob

import "testing"

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
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.s); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("Sys.*|FS.**", "Sys.GetInfo")
	f.Fuzz(func(t *testing.T, p, s string) {
		n := MatchPrefix(p, s)
		if n > len(s) || n < -1 {
			t.Fatalf("MatchPrefix(%q, %q) = %d", p, s, n)
		}
	})
}
