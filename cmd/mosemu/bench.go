package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// benchPackages are the packages whose benchmarks make the project's
// figures, in the order their rows appear.
var benchPackages = []string{"./emu", "./emu/flashenc", "./emu/fleet", "./emu/flash", "./fs", "./tls", "./tls/tls12", "./atca", "./atca/host"}

// ratios pairs each figure with the baseline measured in the same run.
var ratios = []struct{ name, baseline, what string }{
	{"BenchmarkCallWS", "BenchmarkDispatchInProcess", "RPC over WebSocket vs in-process dispatch (time per call)"},
	{"BenchmarkCallHTTP", "BenchmarkDispatchInProcess", "RPC over HTTP POST vs in-process dispatch"},
	{"BenchmarkCallUART", "BenchmarkDispatchInProcess", "RPC over the pty vs in-process dispatch"},
	{"BenchmarkEncrypt", "BenchmarkAESECBBaseline", "flash encryption vs plain AES-256-ECB (time per MiB)"},
	{"BenchmarkSign", "BenchmarkSignECDSABaseline", "ATECC608A Sign through I2C framing vs crypto/ecdsa (time per signature)"},
	{"BenchmarkHandshakeATCAKey", "BenchmarkHandshakeSoftwareKey", "TLS handshake with an ATCA:0 key (chip signs and does the ECDHE) vs a key file"},
	{"BenchmarkServerHandshake", "BenchmarkServerHandshakeCryptoTLS", "TLS server handshake: tls12 (the mbedTLS-like engine) vs crypto/tls"},
}

var (
	benchLine = regexp.MustCompile(`^(Benchmark[^\s-]+)(-\d+)?\s+(\d+)\s+(.*)$`)
	pkgLine   = regexp.MustCompile(`^pkg: (\S+)`)
)

// benchResult is one benchmark's figures: unit -> value.
type benchResult struct {
	pkg, name string
	vals      map[string]float64
}

func benchCmd() *cobra.Command {
	var out, benchtime, fleetSizes, from, date string
	c := &cobra.Command{
		Use:   "bench",
		Short: "Run the project's benchmarks (needs the source tree and Go) and write the figures",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			var buf bytes.Buffer
			if from != "" {
				b, err := os.ReadFile(from)
				if err != nil {
					return err
				}
				buf.Write(b)
			} else {
				args := append([]string{"test", "-run", "^$", "-bench", ".", "-benchtime", benchtime}, benchPackages...)
				cmd := exec.Command("go", args...)
				cmd.Stdout, cmd.Stderr = io.MultiWriter(&buf, os.Stderr), os.Stderr
				if err := cmd.Run(); err != nil {
					return err
				}
			}
			if date == "" {
				date = time.Now().UTC().Format("2006-01-02")
			}
			md := benchMarkdown(parseBench(&buf), date, machine())
			if sizes, err := parseSizes(fleetSizes); err != nil {
				return err
			} else if len(sizes) > 0 && from == "" {
				sec, err := fleetSection(sizes)
				if err != nil {
					return err
				}
				md += sec
			}
			fmt.Print(md)
			if out == "" {
				return nil
			}
			return os.WriteFile(out, []byte(md), 0o644)
		},
	}
	c.Flags().StringVar(&out, "out", "", "also write the figures to this Markdown file")
	c.Flags().StringVar(&benchtime, "benchtime", "1s", "go test -benchtime")
	c.Flags().StringVar(&fleetSizes, "fleet", "1000", "fleet sizes to measure, e.g. 1000,10000 (\"\" for none)")
	c.Flags().StringVar(&from, "from", "", "render saved `go test -bench` output (e.g. from CI) instead of running the benchmarks")
	c.Flags().StringVar(&date, "date", "", "date of the run written in the header (default today)")
	return c
}

// parseBench reads `go test -bench` output: results in the order printed
// (packages in the order given, benchmarks in source order), the last run
// of a benchmark counting.
func parseBench(r io.Reader) []benchResult {
	var res []benchResult
	index := map[string]int{}
	pkg := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := pkgLine.FindStringSubmatch(sc.Text()); m != nil {
			pkg = m[1]
			continue
		}
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[4])
		vals := map[string]float64{}
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				vals[f[i+1]] = v
			}
		}
		key := pkg + " " + m[1]
		if i, ok := index[key]; ok {
			res[i].vals = vals
			continue
		}
		index[key] = len(res)
		res = append(res, benchResult{pkg: pkg, name: m[1], vals: vals})
	}
	return res
}

// unitOrder fixes the column order of the figures: time, throughput,
// memory, then the benchmark's own metrics alphabetically.
var unitOrder = map[string]int{"ns/op": 0, "MB/s": 1, "B/op": 2, "allocs/op": 3}

// benchMarkdown renders BENCHMARKS.md: the same rows and units in the same
// order at every run, numbers written as a person would (no exponents).
func benchMarkdown(res []benchResult, date, machine string) string {
	find := func(name string) float64 {
		for _, r := range res {
			if r.name == name {
				return r.vals["ns/op"]
			}
		}
		return 0
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Benchmarks\n\nMade by `make bench` (`go run ./cmd/mosemu bench`) on %s, %s.\n", date, machine)
	md.WriteString("Ratios compare a figure with its baseline measured in the same run.\n\n## Ratios\n\n| figure | ratio | figure | baseline |\n|---|---|---|---|\n")
	for _, r := range ratios {
		a, b := find(r.name), find(r.baseline)
		if a > 0 && b > 0 {
			ratio := fmt.Sprintf("%.2f× slower", a/b)
			if a < b {
				ratio = fmt.Sprintf("%.2f× faster", b/a)
			}
			fmt.Fprintf(&md, "| %s | %s | %s: %s | %s: %s |\n", r.what, ratio, r.name, duration(a), r.baseline, duration(b))
		}
	}
	md.WriteString("\n## All figures\n\n| package | benchmark | figures |\n|---|---|---|\n")
	for _, r := range res {
		units := make([]string, 0, len(r.vals))
		for u := range r.vals {
			units = append(units, u)
		}
		sort.Slice(units, func(i, j int) bool {
			oi, iok := unitOrder[units[i]]
			oj, jok := unitOrder[units[j]]
			switch {
			case iok && jok:
				return oi < oj
			case iok != jok:
				return iok
			}
			return units[i] < units[j]
		})
		parts := make([]string, len(units))
		for i, u := range units {
			parts[i] = figure(r.vals[u], u)
		}
		fmt.Fprintf(&md, "| %s | %s | %s |\n", strings.TrimPrefix(r.pkg, "github.com/mosemu/mosemu/"), r.name, strings.Join(parts, ", "))
	}
	return md.String()
}

// figure renders one value with its unit.
func figure(v float64, unit string) string {
	switch unit {
	case "ns/op":
		return duration(v) + "/op"
	case "MB/s":
		return plain(v) + " MB/s"
	}
	return plain(v) + " " + unit
}

// duration renders nanoseconds in the unit that keeps 3-4 significant digits.
func duration(ns float64) string {
	switch {
	case ns >= 1e9:
		return plain(ns/1e9) + " s"
	case ns >= 1e6:
		return plain(ns/1e6) + " ms"
	case ns >= 1e3:
		return plain(ns/1e3) + " µs"
	}
	return plain(ns) + " ns"
}

// plain renders v without an exponent: thousands grouped with spaces, two
// decimals below 100, one below 1000, none above.
func plain(v float64) string {
	prec := 0
	switch a := math.Abs(v); {
	case a < 100:
		prec = 2
	case a < 1000:
		prec = 1
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var g strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			g.WriteString(" ")
		}
		g.WriteRune(c)
	}
	out := g.String()
	if neg {
		out = "-" + out
	}
	if frac != "" {
		out += "." + frac
	}
	return out
}

func machine() string {
	b, _ := exec.Command("go", "env", "GOOS", "GOARCH").Output()
	return fmt.Sprintf("%s, %d CPUs", strings.Join(strings.Fields(string(b)), "/"), numCPU())
}

func numCPU() int { return runtime.NumCPU() }
