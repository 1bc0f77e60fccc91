package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/fleet"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/mqtt"
	"github.com/mosemu/mosemu/rpc/client"
)

// fleetProc is a running `mosemu fleet`.
type fleetProc struct {
	cmd      *exec.Cmd
	out, err bytes.Buffer
	state    string
}

func startFleetProc(t *testing.T, bin string, args ...string) *fleetProc {
	t.Helper()
	p := &fleetProc{state: t.TempDir()}
	p.cmd = exec.Command(bin, append([]string{"fleet", "--state", p.state, "--stats-every", "0", "--probe-rate", "0"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	return p
}

// manifest waits for fleet.json (written once every device has started).
func (p *fleetProc) manifest(t *testing.T) fleet.Manifest {
	t.Helper()
	path := filepath.Join(p.state, "fleet.json")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil {
			var m fleet.Manifest
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s; stderr:\n%s", path, p.err.String())
		}
	}
}

// stop sends SIGTERM and returns the exit code.
func (p *fleetProc) stop(t *testing.T) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	err := p.cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func getInfo(t *testing.T, url string) (id, mac string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	defer c.Close()
	var res []byte
	for { // the device's SUBSCRIBE may trail its CONNACK by a moment
		callCtx, cancelCall := context.WithTimeout(ctx, 2*time.Second)
		res, err = c.Call(callCtx, "Sys.GetInfo", nil)
		cancelCall()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("Sys.GetInfo via %s: %v", url, err)
	}
	var info struct{ ID, MAC string }
	if err := json.Unmarshal(res, &info); err != nil {
		t.Fatal(err)
	}
	return info.ID, info.MAC
}

// TestShardedFleetsOnMosquitto runs a fleet as two processes sharing one
// real mosquitto and reaches a device of each shard over MQTT and WS.
func TestShardedFleetsOnMosquitto(t *testing.T) {
	broker := fmt.Sprintf("127.0.0.1:%d", testkit.StartMosquitto(t, ""))
	bin := buildMosemu(t)
	shards := []*fleetProc{
		startFleetProc(t, bin, "--count", "6", "--shard", "0/2", "--external-broker", broker),
		startFleetProc(t, bin, "--count", "6", "--shard", "1/2", "--external-broker", broker),
	}
	ids := map[string]bool{}
	for i, p := range shards {
		m := p.manifest(t)
		if m.Broker != broker || m.Shard != fmt.Sprintf("%d/2", i) || len(m.Devices) != 3 || m.First != 1+3*i {
			t.Fatalf("shard %d manifest: %+v", i, m)
		}
		for _, d := range m.Devices {
			if ids[d.ID] {
				t.Fatalf("id %s in two shards", d.ID)
			}
			ids[d.ID] = true
			if d.ID != fmt.Sprintf("esp32_%06d", d.Number) || filepath.Base(d.StateDir) != fmt.Sprintf("dev-%04d", d.Number) {
				t.Fatalf("device %+v: id and directory disagree with its number", d)
			}
		}
		d := m.Devices[len(m.Devices)-1]
		if id, mac := getInfo(t, d.MQTT); id != d.ID || mac != d.MAC {
			t.Fatalf("over MQTT %s answered id %s mac %s, want %s %s", d.MQTT, id, mac, d.ID, d.MAC)
		}
		if id, _ := getInfo(t, d.WS); id != d.ID {
			t.Fatalf("over WS %s answered id %s, want %s", d.WS, id, d.ID)
		}
	}
	if len(ids) != 6 {
		t.Fatalf("%d distinct ids, want 6", len(ids))
	}
	for i, p := range shards {
		if code := p.stop(t); code != 0 {
			t.Fatalf("shard %d exited %d; stderr:\n%s", i, code, p.err.String())
		}
		if !strings.Contains(p.out.String(), "mosemu fleet: summary: 3 devices ran") {
			t.Fatalf("shard %d printed no summary:\n%s", i, p.out.String())
		}
	}
}

// TestFleetExitStatus: a device that cannot start makes the exit status
// non-zero unless tolerated, and bad flags are refused before anything runs.
func TestFleetExitStatus(t *testing.T) {
	bin := buildMosemu(t)
	for _, args := range [][]string{{"--rate", "-5"}, {"--telemetry-interval", "1s", "--telemetry-qos", "3"}, {"--disconnect-rate", "-1"},
		{"--shard", "2/2"}, {"--wrong-credentials", "0.5"}, {"--count", "2", "--shard", "0/3"}} {
		out, err := exec.Command(bin, append([]string{"fleet", "--state", t.TempDir(), "--exit-after", "1ms"}, args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("fleet %v accepted:\n%s", args, out)
		}
	}
	for _, tc := range []struct {
		extra []string
		code  int
	}{{nil, 1}, {[]string{"--max-failures", "1"}, 0}} {
		state := t.TempDir()
		os.MkdirAll(filepath.Join(state, "dev-0002"), 0o755)
		os.WriteFile(filepath.Join(state, "dev-0002", "device.json"), []byte("{not json"), 0o644)
		args := append([]string{"fleet", "--count", "3", "--state", state, "--broker-addr", "127.0.0.1:0", "--exit-after", "100ms", "--stats-every", "0", "--probe-rate", "0"}, tc.extra...)
		cmd := exec.Command(bin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(out.String(), "failed: device 2 (") {
			t.Fatalf("fleet %v: exit %d, want %d:\n%s", tc.extra, code, tc.code, out.String())
		}
	}
}

// TestBenchFleetMeasures runs the fleet benchmark on a small fleet: every
// figure is measured, none made up.
func TestBenchFleetMeasures(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a fleet")
	}
	bin := buildMosemu(t)
	f, err := benchFleet(bin, 20, 200, 500*time.Millisecond, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if f.Start <= 0 || f.Stop <= 0 || f.PeakRSS < 1<<20 || f.FDs < 20 || f.MsgsPerSec < 50 {
		t.Fatalf("figures %+v", f)
	}
}

// TestRunExternalBroker: `run --external-broker` connects the device to
// that broker and starts no embedded one, as `fleet --external-broker`.
func TestRunExternalBroker(t *testing.T) {
	b, err := mqtt.StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bin := buildMosemu(t)
	cmd := exec.Command(bin, "run", "--state", t.TempDir(), "--http", "127.0.0.1:0", "--quiet", "--external-broker", b.Addr())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	re := regexp.MustCompile(`mos --port (mqtt://(\S+)/(\S+)) call`)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		m := re.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if m[2] != b.Addr() {
			t.Fatalf("device on broker %s, want %s", m[2], b.Addr())
		}
		go io.Copy(io.Discard, out)
		if id, _ := getInfo(t, m[1]); id != m[3] {
			t.Fatalf("Sys.GetInfo over %s: id %s", m[1], id)
		}
		return
	}
	t.Fatal("run printed no MQTT address")
}

// TestFleetLowFDLimit: under a descriptor limit too low for the fleet,
// fleet says so, starts what fits, names the devices that failed, keeps
// the others reachable and exits non-zero.
func TestFleetLowFDLimit(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	bin := buildMosemu(t)
	state := t.TempDir()
	cmd := exec.Command(prlimit, "--nofile=120:120", bin, "fleet", "--count", "150", "--state", state,
		"--broker-addr", "127.0.0.1:0", "--exit-after", "4s", "--stats-every", "0", "--probe-rate", "0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &fleetProc{cmd: cmd, state: state}
	m := p.manifest(t)
	t.Logf("%d devices up, %d failed", len(m.Devices), len(m.Failed))
	if len(m.Devices) < 50 || len(m.Failed) == 0 || len(m.Devices)+len(m.Failed) != 150 {
		t.Fatalf("%d devices up, %d failed:\n%s", len(m.Devices), len(m.Failed), out.String())
	}
	time.Sleep(1500 * time.Millisecond) // flash images close when idle, freeing descriptors
	if id, _ := getInfo(t, m.Devices[0].WS); id != m.Devices[0].ID {
		t.Fatalf("first device answered as %s", id)
	}
	err = cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1", err)
	}
	for _, want := range []string{"the open-file limit (120, hard limit 120) holds about", "failed: device", "too many open files"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in:\n%s", want, out.String())
		}
	}
}

// TestFleetRefusingBroker: devices whose broker refuses them are reported
// with the broker's reason, and the fleet stays up.
func TestFleetRefusingBroker(t *testing.T) {
	b, err := mqtt.StartBrokerWith("127.0.0.1:0", mqtt.BrokerOptions{User: "admin", Pass: "right"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bin := buildMosemu(t)
	out, err := exec.Command(bin, "fleet", "--count", "3", "--state", t.TempDir(), "--external-broker", b.Addr(),
		"--mqtt-user", "admin", "--mqtt-pass", "wrong", "--connect-wait", "1s", "--exit-after", "100ms", "--stats-every", "0", "--probe-rate", "0").CombinedOutput()
	if err != nil {
		t.Fatalf("fleet: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "not connected to MQTT "+b.Addr()+": 3 devices; esp32_000001: mqtt: CONNACK 5: Connection Refused: Not Authorised") {
		t.Fatalf("no clear message about the refusing broker:\n%s", out)
	}
}
