package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// fleetFigures is one `mosemu fleet` run measured from outside the process.
type fleetFigures struct {
	Devices    int
	Start      time.Duration // spawn to "N devices started", every device connected
	Stop       time.Duration // SIGTERM to exit
	PeakRSS    int64         // VmHWM, bytes
	FDs        int           // open descriptors with every device up
	MsgsPerSec float64       // PUBLISH packets/s received by the embedded broker
	Offered    float64       // telemetry messages/s asked for
}

// benchFleet runs `mosemu fleet --count n` (the binary self) with
// telemetry offered at offered msg/s and measures it through /proc and its
// Prometheus endpoint, counting messages over window after warm-up.
func benchFleet(self string, n int, offered float64, warmUp, window time.Duration) (fleetFigures, error) {
	f := fleetFigures{Devices: n, Offered: offered}
	state, err := os.MkdirTemp("", "mosemu-bench-fleet-")
	if err != nil {
		return f, err
	}
	defer os.RemoveAll(state)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return f, err
	}
	metrics := l.Addr().String()
	l.Close()
	interval := time.Duration(float64(n) / offered * float64(time.Second))
	cmd := exec.Command(self, "fleet", "--count", strconv.Itoa(n), "--state", filepath.Join(state, "fleet"),
		"--broker-addr", "127.0.0.1:0", "--stats-every", "0", "--probe-rate", "0", "--metrics", metrics,
		"--telemetry-interval", interval.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		return f, err
	}
	cmd.Stderr = io.Discard
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return f, err
	}
	defer cmd.Process.Kill()
	started := regexp.MustCompile(`^mosemu fleet: (\d+) devices started in .*, (\d+) failed, (\d+)/\d+ connected`)
	sc := bufio.NewScanner(out)
	ok := false
	for sc.Scan() {
		if m := started.FindStringSubmatch(sc.Text()); m != nil {
			f.Start = time.Since(t0)
			if m[1] != strconv.Itoa(n) || m[2] != "0" || m[3] != m[1] {
				return f, fmt.Errorf("fleet of %d: %s", n, sc.Text())
			}
			ok = true
			break
		}
	}
	if !ok {
		return f, fmt.Errorf("fleet of %d exited before starting", n)
	}
	go io.Copy(io.Discard, out)
	pid := cmd.Process.Pid
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		f.FDs = len(ents)
	}
	var m0, m1 float64
	var t1, t2 time.Time
	time.Sleep(warmUp)
	if m0, err = scrapeMetric(metrics, "mosemu_fleet_broker_messages_received_total"); err != nil {
		return f, err
	}
	t1 = time.Now()
	time.Sleep(window)
	if m1, err = scrapeMetric(metrics, "mosemu_fleet_broker_messages_received_total"); err != nil {
		return f, err
	}
	t2 = time.Now()
	f.MsgsPerSec = (m1 - m0) / t2.Sub(t1).Seconds()
	f.PeakRSS = procStatusBytes(pid, "VmHWM:")
	ts := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	f.Stop = time.Since(ts)
	return f, nil
}

func scrapeMetric(addr, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s at %s", name, addr)
}

func procStatusBytes(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// fleetSection runs the fleet benchmarks for each size and returns the
// Markdown section of BENCHMARKS.md.
func fleetSection(sizes []int) (string, error) {
	var b strings.Builder
	b.WriteString("\n## Fleets\n\n`mosemu fleet` with an embedded broker, measured from outside the process (start: spawn until every device is up and connected; stop: SIGTERM until exit; peak RSS: VmHWM; messages: PUBLISH packets/s into the broker with telemetry offered at 20,000 msg/s; fresh state directories).\n\n")
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "Machine: %s; load average %s when the fleet runs began (the machine is shared: figures are lower bounds).\n\n", cpuModel(), loadAverage())
	b.WriteString("| devices | start | stop | peak RSS | devices per GiB | fds per device | messages/s |\n|---|---|---|---|---|---|---|\n")
	for _, n := range sizes {
		fmt.Fprintf(os.Stderr, "bench: fleet of %d devices\n", n)
		f, err := benchFleet(self, n, 20000, 2*time.Second, 5*time.Second)
		if err != nil {
			return "", err
		}
		gib := float64(f.PeakRSS) / (1 << 30)
		fmt.Fprintf(&b, "| %d | %.1f s | %.1f s | %d MiB | %.0f | %.2f | %.0f |\n", n, f.Start.Seconds(), f.Stop.Seconds(),
			f.PeakRSS>>20, float64(n)/gib, float64(f.FDs)/float64(n), f.MsgsPerSec)
	}
	return b.String(), nil
}

// parseSizes parses "1000,10000".
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--fleet %q: want device counts such as 1000,10000", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// cpuModel names the processor from /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	n, model := 0, ""
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			model = strings.TrimSpace(v)
		}
	}
	return fmt.Sprintf("%d × %s", n, model)
}

// loadAverage is the 1-minute load average, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "unknown"
}
