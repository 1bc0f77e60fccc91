package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goBenchOutput is `go test -bench` output in the shape the bench command
// parses; two runs differ in figures and in the order go prints units.
const goBenchOutput = `goos: linux
goarch: amd64
pkg: github.com/mosemu/mosemu/emu
cpu: Some CPU
BenchmarkDispatchInProcess-2   	  229178	      5234 ns/op
BenchmarkCallWS-2              	   33332	     35965 ns/op
PASS
ok  	github.com/mosemu/mosemu/emu	3.1s
pkg: github.com/mosemu/mosemu/emu/flashenc
BenchmarkAESECBBaseline-2   	    2263	    524028 ns/op	2000.99 MB/s
BenchmarkEncrypt-2          	      58	  19981680 ns/op	  52.48 MB/s
pkg: github.com/mosemu/mosemu/emu/fleet
BenchmarkIdleDeviceMemory-2 	       2	 644996000 ns/op	    2155 boot-µs/device	    114483 heap-bytes/device	13.02 goroutines/device
pkg: github.com/mosemu/mosemu/tls
BenchmarkHandshake-2        	    1600	    722013 ns/op
`

func TestBenchMarkdownGolden(t *testing.T) {
	got := benchMarkdown(parseBench(strings.NewReader(goBenchOutput)), "2026-01-01", "linux/amd64, 2 CPUs")
	golden := filepath.Join("testdata", "benchmarks.golden.md")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("BENCHMARKS.md rendering differs from %s:\n%s", golden, got)
	}
	if regexp.MustCompile(`\de[+-]\d`).MatchString(got) {
		t.Fatalf("exponent in the figures:\n%s", got)
	}
}

// TestBenchMarkdownStableOrder renders two runs whose figures (hence the
// old value-sorted unit order) differ: rows and units come out in the same
// order.
func TestBenchMarkdownStableOrder(t *testing.T) {
	other := strings.NewReplacer("19981680 ns/op", "9981680 ns/op", "52.48 MB/s", "152.48 MB/s", "2155 boot", "9155 boot").Replace(goBenchOutput)
	shape := func(md string) string {
		return regexp.MustCompile(`[0-9][0-9 .]*`).ReplaceAllString(md, "N")
	}
	a := benchMarkdown(parseBench(strings.NewReader(goBenchOutput)), "d", "m")
	b := benchMarkdown(parseBench(strings.NewReader(other)), "d", "m")
	if a == b || shape(a) != shape(b) {
		t.Fatalf("layout changed with the figures:\n%s\n%s", a, b)
	}
}

func TestPlain(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0.5, "0.50"}, {52.48, "52.48"}, {524.03, "524.0"}, {2155, "2 155"}, {19981680, "19 981 680"}, {-1234.6, "-1 235"},
	} {
		if got := plain(tc.v); got != tc.want {
			t.Errorf("plain(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
