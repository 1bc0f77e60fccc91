package labui

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/observe"
	"github.com/mosemu/mosemu/emu/snapshot"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/spf13/afero"
)

func startConsole(t *testing.T, dir string) (*Seat, string) {
	t.Helper()
	return serveSeat(t, startSeat(t, emu.Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Seed: 3}))
}

// startSeat opens and starts a seat with o, closed when the test ends.
func startSeat(t *testing.T, o emu.Options) *Seat {
	t.Helper()
	seat, err := OpenSeat(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seat.Close() })
	if err := seat.Start(); err != nil {
		t.Fatal(err)
	}
	return seat
}

// serveSeat serves the console of seat on a loopback port until the test
// ends and returns its base URL.
func serveSeat(t *testing.T, seat *Seat) (*Seat, string) {
	t.Helper()
	srv := New(Options{})
	srv.Add("", seat)
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return seat, "http://" + addr
}

func post(t *testing.T, base, origin, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/api/action", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// TestConsoleLiveTraceAndActions checks the page, the live RPC trace over
// the WebSocket, the state, the Origin checks, snapshot and restore.
func TestConsoleLiveTraceAndActions(t *testing.T) {
	dir := t.TempDir()
	seat, base := startConsole(t, dir)
	resp, err := http.Get(base + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /: %v %v", resp, err)
	}
	resp.Body.Close()

	// Another origin can neither open the WebSocket nor act.
	if _, resp, err := websocket.DefaultDialer.Dial(strings.Replace(base, "http", "ws", 1)+"/ws", http.Header{"Origin": {"http://evil.example"}}); err == nil || resp.StatusCode != 403 {
		t.Fatalf("cross-origin WebSocket: %v", err)
	}
	if code, _ := post(t, base, "http://evil.example", `{"action":"reset"}`); code != 403 {
		t.Fatalf("cross-origin action: %d", code)
	}
	req, _ := http.NewRequest("GET", base+"/api/state", nil)
	req.Host = "attacker.example:9090" // DNS rebinding
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Fatalf("foreign Host: %v %v", resp, err)
	}

	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(base, "http", "ws", 1)+"/ws", http.Header{"Origin": {base}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	d := seat.Device()
	r, err := http.Get("http://" + d.HTTPAddr() + "/rpc/Sys.GetInfo")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var sawRPC, sawState bool
	var seen []string
	for !sawRPC || !sawState {
		var m Message
		if err := ws.ReadJSON(&m); err != nil {
			var bl []string
			for _, e := range seat.Backlog() {
				if e.Kind == observe.RPC || e.Kind == observe.Console {
					bl = append(bl, e.Line+fmt.Sprint(e.Call))
				}
			}
			t.Fatalf("reading the live stream: %v (rpc %v, state %v; got %v); backlog tail %q", err, sawRPC, sawState, seen, bl[max(0, len(bl)-4):])
		}
		seen = append(seen, m.T)
		calls := m.RPC // a call made before the page registered is in hello
		if m.T == "rpc" {
			calls = append(calls, m)
		}
		for _, c := range calls {
			if c.Call.Method == "Sys.GetInfo" {
				sawRPC = c.Call.Channel == "HTTP" && c.Call.Auth == "anonymous"
			}
		}
		switch {
		case m.T == "state":
			s := m.State
			sawState = s.Device.Running && len(s.Flash.Map) == 1024 && s.Efuses != nil && len(s.Config) > 100 && len(s.ATCA.Slots) == 16
			for _, b := range s.Efuses.Blocks {
				if b.State == "" {
					t.Errorf("block %d has no state", b.Block)
				}
			}
		}
	}

	if code, m := post(t, base, base, `{"action":"snapshot","name":"clean"}`); code != 200 {
		t.Fatalf("snapshot: %d %v", code, m)
	}
	// A key in flash, then restore: it is gone.
	if err := os.WriteFile(filepath.Join(t.TempDir(), "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := d.FS().Create("key.pem")
	f.Write([]byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI\n-----END EC PRIVATE KEY-----\n"))
	f.Close()
	if s := Inspect("", d); len(s.Flash.Secrets) == 0 {
		t.Fatal("plaintext private key not flagged on the flash map")
	}
	// Another process may not restore while the seat runs the device.
	if err := (snapshot.Store{StateDir: dir}).Restore("clean"); err == nil {
		t.Fatal("restore allowed while the device runs")
	}
	if code, m := post(t, base, "", `{"action":"restore","name":"clean"}`); code != 200 {
		t.Fatalf("restore: %d %v", code, m)
	}
	d = seat.Device()
	if _, err := d.FS().Stat("key.pem"); err == nil {
		t.Fatal("key.pem survived the restore")
	}
	if code, m := post(t, base, base, `{"action":"reset"}`); code != 200 || !seat.Device().Running() {
		t.Fatalf("reset: %d %v", code, m)
	}
	if code, m := post(t, base, base, `{"action":"powercut"}`); code != 200 || !seat.Device().Running() {
		t.Fatalf("power cut: %d %v", code, m)
	}
}

func TestClassifySector(t *testing.T) {
	erased := make([]byte, 4096)
	for i := range erased {
		erased[i] = 0xFF
	}
	if c, _ := ClassifySector(erased); c != 'e' {
		t.Errorf("erased sector: %c", c)
	}
	for _, prefix := range []string{"", "\x00\x10\x02\xc4"} { // alone, or inline in littlefs metadata
		text := append([]byte(prefix+"joe:myproduct:a8c53ec89d0a1b56e3e6ae2e1e0b1bf6\n"), erased[:4000]...)
		if c, s := ClassifySector(text[:4096]); c != 'p' || len(s) != 1 || s[0].Offset != int64(len(prefix)) {
			t.Errorf("rpc_auth.txt sector: %c %v", c, s)
		}
	}
}

// TestFleetList shows several devices: a list, a page per device, and the
// actions a fleet device does not support refused.
func TestFleetList(t *testing.T) {
	srv := New(Options{})
	for _, name := range []string{"dev-0000", "dev-0001"} {
		d, err := emu.New(emu.Options{StateDir: filepath.Join(t.TempDir(), name), HTTPAddr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		srv.Add(name, DeviceTarget{D: d})
	}
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	base := "http://" + addr
	resp, err := http.Get(base + "/api/devices")
	if err != nil {
		t.Fatal(err)
	}
	var devs []struct{ Name, ID string }
	json.NewDecoder(resp.Body).Decode(&devs)
	resp.Body.Close()
	if len(devs) != 2 || devs[1].Name != "dev-0001" || devs[1].ID == "" {
		t.Fatalf("devices %+v", devs)
	}
	resp, err = http.Get(base + "/api/state?dev=dev-0001")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("state of dev-0001: %v %v", resp, err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("POST", base+"/api/action?dev=dev-0001", strings.NewReader(`{"action":"powercut"}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 409 {
		t.Fatalf("power cut of a fleet device: %v %v", resp, err)
	}
	req, _ = http.NewRequest("POST", base+"/api/action?dev=dev-0000", strings.NewReader(`{"action":"reset"}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("reset of a fleet device: %v %v", resp, err)
	}
	if resp, _ := http.Get(base + "/api/state?dev=nosuch"); resp.StatusCode != 404 {
		t.Fatalf("unknown device: %d", resp.StatusCode)
	}
}

// TestHoldDownloadMode holds the chip in the ROM loader from the console
// and releases it: the firmware stops, then boots again.
func TestHoldDownloadMode(t *testing.T) {
	seat, base := serveSeat(t, startSeat(t, emu.Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Serial: true}))
	if code, m := post(t, base, base, `{"action":"download"}`); code != 200 {
		t.Fatalf("download: %d %v", code, m)
	}
	d := seat.Device()
	testkit.WaitUntil(t, "download mode", func() bool { return d.Downloading() && !d.Running() })
	if code, m := post(t, base, base, `{"action":"release"}`); code != 200 {
		t.Fatalf("release: %d %v", code, m)
	}
	testkit.WaitUntil(t, "the firmware back", func() bool { return !d.Downloading() && d.Running() })
}

func TestFindSecretsPublicPEM(t *testing.T) {
	s := FindSecrets([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIGH\n"))
	if len(s) != 2 || !s[0].Public || s[1].Public || !strings.Contains(s[1].Kind, "private key") {
		t.Fatalf("%+v", s)
	}
}

func FuzzClassifySector(f *testing.F) {
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\njoe:myproduct:a8c53ec89d0a1b56e3e6ae2e1e0b1bf6\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, secrets := ClassifySector(b)
		if c != 'e' && c != 'p' && c != 'c' {
			t.Fatalf("class %q", c)
		}
		for _, s := range secrets {
			if s.Offset < 0 || s.Offset >= int64(len(b)) {
				t.Fatalf("secret offset %d outside %d bytes", s.Offset, len(b))
			}
		}
	})
}

// TestStateHasNoKeyMaterial burns a known flash encryption key (not
// read-protected) and checks that nothing the console serves contains it.
func TestStateHasNoKeyMaterial(t *testing.T) {
	seat, base := startConsole(t, t.TempDir())
	var key [32]byte
	for i := range key {
		key[i] = byte(0xA0 + i)
	}
	if err := seat.Device().Efuses().BurnKey(1, key); err != nil {
		t.Fatal(err)
	}
	afero.WriteFile(seat.Device().FS(), "conf9.json", []byte(`{"wifi":{"sta":{"pass":"hunter2hunter2"}}}`), 0o644)
	seat.Reset()
	resp, err := http.Get(base + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, secret := range []string{hex.EncodeToString(key[:]), hex.EncodeToString(key[:8]), "hunter2hunter2"} {
		if strings.Contains(strings.ToLower(string(body)), secret) {
			t.Errorf("the state served exposes %s", secret)
		}
	}
	if !strings.Contains(string(body), `"state":"burnt"`) {
		t.Error("BLOCK1 not shown as burnt")
	}
}

// TestRAMShowsConnections counts the connections the device's server holds.
func TestRAMShowsConnections(t *testing.T) {
	seat, _ := startConsole(t, t.TempDir())
	d := seat.Device()
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", d.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for Inspect("", d).RAM.Conns != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("RAM view: %+v, want 3 connections", Inspect("", d).RAM)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
}

// TestInspectESP8266 shows a board without efuses nor partition table.
func TestInspectESP8266(t *testing.T) {
	seat := startSeat(t, emu.Options{StateDir: t.TempDir(), Arch: "esp8266", HTTPAddr: "127.0.0.1:0"})
	s := Inspect("", seat.Device())
	if s.Efuses != nil || s.Device.Arch != "esp8266" || !s.Device.Running || len(s.Flash.Map) == 0 || strings.Count(s.Flash.Map, "p") == 0 {
		t.Fatalf("ESP8266 state: %+v", s.Device)
	}
}
