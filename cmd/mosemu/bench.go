package main

import (
	"bufio"
	"bytes"
	"fmt"
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

// benchPackages are the packages whose benchmarks make the project's figures.
var benchPackages = []string{"./emu", "./emu/flashenc", "./emu/fleet", "./emu/flash", "./fs", "./tls", "./atca", "./atca/host"}

// ratios pairs each figure with the baseline measured in the same run.
var ratios = []struct{ name, baseline, what string }{
	{"BenchmarkCallWS", "BenchmarkDispatchInProcess", "RPC over WebSocket vs in-process dispatch (time per call)"},
	{"BenchmarkCallHTTP", "BenchmarkDispatchInProcess", "RPC over HTTP POST vs in-process dispatch"},
	{"BenchmarkCallUART", "BenchmarkDispatchInProcess", "RPC over the pty vs in-process dispatch"},
	{"BenchmarkEncrypt", "BenchmarkAESECBBaseline", "flash encryption vs plain AES-256-ECB (time per MiB)"},
	{"BenchmarkSign", "BenchmarkSignECDSABaseline", "ATECC608A Sign through I2C framing vs crypto/ecdsa (time per signature)"},
	{"BenchmarkHandshakeATCAKey", "BenchmarkHandshakeSoftwareKey", "TLS handshake with an ATCA:0 key vs a key file"},
}

var benchLine = regexp.MustCompile(`^(Benchmark\w+?)(-\d+)?\s+(\d+)\s+(.*)$`)

func benchCmd() *cobra.Command {
	var out, benchtime string
	c := &cobra.Command{
		Use:   "bench",
		Short: "Run the project's benchmarks (needs the source tree and Go) and write the figures",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			args := append([]string{"test", "-run", "^$", "-bench", ".", "-benchtime", benchtime}, benchPackages...)
			cmd := exec.Command("go", args...)
			var buf bytes.Buffer
			cmd.Stdout, cmd.Stderr = &buf, os.Stderr
			if err := cmd.Run(); err != nil {
				os.Stdout.Write(buf.Bytes())
				return err
			}
			metrics := map[string]map[string]float64{}
			var names []string
			sc := bufio.NewScanner(&buf)
			for sc.Scan() {
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
				if _, ok := metrics[m[1]]; !ok {
					names = append(names, m[1])
				}
				metrics[m[1]] = vals
			}
			sort.Strings(names)
			var md strings.Builder
			fmt.Fprintf(&md, "# Benchmarks\n\nMade by `make bench` (`go run ./cmd/mosemu bench`) on %s, %s.\n", time.Now().UTC().Format("2006-01-02"), machine())
			md.WriteString("Ratios compare a figure with its baseline measured in the same run.\n\n## Ratios\n\n| figure | ratio |\n|---|---|\n")
			for _, r := range ratios {
				a, b := metrics[r.name]["ns/op"], metrics[r.baseline]["ns/op"]
				if a > 0 && b > 0 {
					fmt.Fprintf(&md, "| %s | %.2f× slower (%s %.0f ns/op, %s %.0f ns/op) |\n", r.what, a/b, r.name, a, r.baseline, b)
				}
			}
			md.WriteString("\n## All figures\n\n| benchmark | figures |\n|---|---|\n")
			for _, n := range names {
				var parts []string
				for unit, v := range metrics[n] {
					parts = append(parts, fmt.Sprintf("%s %s", strconv.FormatFloat(v, 'g', 6, 64), unit))
				}
				sort.Strings(parts)
				fmt.Fprintf(&md, "| %s | %s |\n", n, strings.Join(parts, ", "))
			}
			fmt.Print(md.String())
			if out == "" {
				return nil
			}
			return os.WriteFile(out, []byte(md.String()), 0o644)
		},
	}
	c.Flags().StringVar(&out, "out", "", "also write the figures to this Markdown file")
	c.Flags().StringVar(&benchtime, "benchtime", "1s", "go test -benchtime")
	return c
}

func machine() string {
	b, _ := exec.Command("go", "env", "GOOS", "GOARCH").Output()
	return fmt.Sprintf("%s, %d CPUs", strings.Join(strings.Fields(string(b)), "/"), numCPU())
}

func numCPU() int { return runtime.NumCPU() }
