package wifi

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
)

var fast = &Timing{Scan: time.Millisecond, Connect: time.Millisecond, DHCP: time.Millisecond, Retry: time.Millisecond}

func station(t *testing.T, cfg Config, aps []AP) (*Station, *testkit.SyncBuffer) {
	t.Helper()
	var lb testkit.SyncBuffer
	log := slog.New(slog.NewTextHandler(&lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := Start(cfg, aps, [6]byte{0x24, 0x0a, 0xc4, 1, 2, 3}, log, fast)
	t.Cleanup(s.Stop)
	return s, &lb
}

func waitStatus(t *testing.T, s *Station, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, _, st, _ := s.Info(); st == want {
			return
		}
	}
	_, _, st, _ := s.Info()
	t.Fatalf("status %q, want %q", st, want)
}

func staCfg(ssid, pass string) Config {
	c := Config{ConnectTimeout: 10 * time.Millisecond, RSSIThr: -95}
	c.STA = []STAConfig{{Enable: true, SSID: ssid, Pass: pass}}
	return c
}

func TestConnectsToStrongestMatchingAP(t *testing.T) {
	s, log := station(t, staCfg("Lab", "secret123"), []AP{
		{SSID: "Lab", Pass: "secret123", RSSI: -80, BSSID: "02:00:00:00:00:01"},
		{SSID: "Lab", Pass: "secret123", RSSI: -40, BSSID: "02:00:00:00:00:02"},
		{SSID: "Lab", RSSI: -30, BSSID: "02:00:00:00:00:03"},                    // open: auth does not match
		{SSID: "Lab", Pass: "secret123", RSSI: -99, BSSID: "02:00:00:00:00:04"}, // below sta_rssi_thr
	})
	waitStatus(t, s, StatusGotIP)
	ip, ap, _, ssid := s.Info()
	if ip != "192.168.1.11" || ap != "" || ssid != "Lab" { // .2 + (0x0203 % 253)
		t.Errorf("info: ip %q ap %q ssid %q", ip, ap, ssid)
	}
	if !strings.Contains(log.String(), "Trying Lab AP 02:00:00:00:00:02 RSSI -40 attempt 1") {
		t.Errorf("log:\n%s", log)
	}
}

func TestWrongPasswordRetries(t *testing.T) {
	s, log := station(t, staCfg("Lab", "wrongpass"), []AP{{SSID: "Lab", Pass: "secret123"}})
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), "attempt 3"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("log:\n%s", log)
		}
	}
	if !strings.Contains(log.String(), "WiFi STA: Disconnected, reason: 15") {
		t.Errorf("log:\n%s", log)
	}
	if _, _, st, _ := s.Info(); st == StatusGotIP {
		t.Error("connected with a wrong password")
	}
}

func TestModes(t *testing.T) {
	for name, tc := range map[string]struct {
		ap, sta bool
		mode    string
	}{"ap": {true, false, "WiFi mode: AP"}, "apsta": {true, true, "WiFi mode: AP+STA"},
		"sta": {false, true, "WiFi mode: STA"}, "off": {false, false, "WiFi mode: off"}} {
		cfg := staCfg("Nowhere", "")
		cfg.STA[0].Enable = tc.sta
		cfg.AP.Enable, cfg.AP.IP = tc.ap, "192.168.4.1"
		s, log := station(t, cfg, nil)
		if !strings.Contains(log.String(), tc.mode) {
			t.Errorf("%s: log:\n%s", name, log)
		}
		if _, ap, _, _ := s.Info(); (ap != "") != tc.ap {
			t.Errorf("%s: ap_ip %q", name, ap)
		}
	}
}

func TestStaticIPAndNet(t *testing.T) {
	cfg := staCfg("Lab", "")
	cfg.STA[0].IP, cfg.STA[0].Netmask, cfg.STA[0].GW = "10.1.2.3", "255.255.255.0", "10.1.2.1"
	s, _ := station(t, cfg, []AP{{SSID: "Lab"}})
	waitStatus(t, s, StatusGotIP)
	if ip, _, _, _ := s.Info(); ip != "10.1.2.3" {
		t.Errorf("static ip %q", ip)
	}
	s2, _ := station(t, staCfg("Lab", ""), []AP{{SSID: "Lab", Net: "10.0.0.0/16"}})
	waitStatus(t, s2, StatusGotIP)
	if ip, _, _, _ := s2.Info(); !strings.HasPrefix(ip, "10.0.") {
		t.Errorf("dhcp ip %q", ip)
	}
}

func TestParseAndLoadAPs(t *testing.T) {
	for in, ok := range map[string]bool{"Lab": true, "Lab:secret123": true, "Lab:secret123:-60": true,
		"": false, "Lab:short": false, "Lab:secret123:60": false, "Lab:secret123:x": false} {
		if _, err := ParseAP(in); (err == nil) != ok {
			t.Errorf("ParseAP(%q) err = %v", in, err)
		}
	}
	p := filepath.Join(t.TempDir(), "aps.json")
	os.WriteFile(p, []byte(`[{"ssid":"Lab","pass":"secret123","rssi":-60}]`), 0o644)
	if aps, err := LoadAPs(p); err != nil || len(aps) != 1 || aps[0].RSSI != -60 {
		t.Errorf("LoadAPs: %v %v", aps, err)
	}
	os.WriteFile(p, []byte(`[{"pass":"x"}]`), 0o644)
	if _, err := LoadAPs(p); err == nil {
		t.Error("an AP without ssid loaded")
	}
}
