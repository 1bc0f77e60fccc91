package emu

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/wifi"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/rpc/client"
)

type wifiInfo struct {
	StaIP  string `json:"sta_ip"`
	APIP   string `json:"ap_ip"`
	Status string `json:"status"`
	SSID   string `json:"ssid"`
}

// mosWiFi does what `mos wifi SSID PASS` does: Config.Set of wifi.ap.enable,
// wifi.sta.enable, ssid and pass, then Config.Save with reboot.
func mosWiFi(t *testing.T, d *Device, ssid, pass string) {
	t.Helper()
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"wifi": map[string]any{
		"ap": map[string]any{"enable": false}, "sta": map[string]any{"enable": true, "ssid": ssid, "pass": pass}}}})
	call(t, c, "Config.Save", map[string]any{"reboot": true})
}

func getWiFi(t *testing.T, d *Device) wifiInfo {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := dialCtx(ctx, "ws://"+d.HTTPAddr()+"/rpc")
		if err != nil {
			cancel()
			continue
		}
		res, err := c.Call(ctx, "Sys.GetInfo", nil)
		c.Close()
		cancel()
		if err != nil {
			continue
		}
		var r struct{ WiFi wifiInfo }
		json.Unmarshal(res, &r)
		return r.WiFi
	}
	t.Fatal("Sys.GetInfo never answered")
	return wifiInfo{}
}

func TestMosWiFiConnects(t *testing.T) {
	var log testkit.SyncBuffer
	aps := []wifi.AP{{SSID: "Lab", Pass: "secret123", RSSI: -70}, {SSID: "Lab", Pass: "secret123", RSSI: -40, BSSID: "02:11:22:33:44:55"}, {SSID: "Cafe"}}
	d := startWith(t, Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 9, Console: &log, WiFiAPs: aps})
	if w := getWiFi(t, d); w != (wifiInfo{APIP: "192.168.4.1", Status: "disconnected"}) {
		t.Errorf("factory wifi = %+v", w)
	}
	log.WaitFor(t, `WiFi mode: AP\n`)
	log.WaitFor(t, `WiFi AP: SSID Mongoose_[0-9A-F]{6}, channel 6`)

	mosWiFi(t, d, "Lab", "secret123")
	log.WaitFor(t, `WiFi mode: STA\n`)
	log.WaitFor(t, `Trying Lab AP 02:11:22:33:44:55 RSSI -40 attempt 1`) // the strongest first
	log.WaitFor(t, `WiFi STA: Connected, BSSID 02:11:22:33:44:55 ch 6 RSSI -40`)
	log.WaitFor(t, `WiFi STA: ready, IP 192\.168\.1\.\d+, GW 192\.168\.1\.1`)
	w := getWiFi(t, d)
	if w.Status != "got ip" || w.SSID != "Lab" || !strings.HasPrefix(w.StaIP, "192.168.1.") || w.APIP != "" {
		t.Errorf("after mos wifi: %+v", w)
	}
}

func TestWiFiWrongPasswordAndMissingAP(t *testing.T) {
	var log testkit.SyncBuffer
	d, err := New(Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 10, Console: &log,
		WiFiAPs: []wifi.AP{{SSID: "Lab", Pass: "secret123"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	mosWiFi(t, d, "Lab", "wrongpass")
	log.WaitFor(t, `Trying Lab AP [0-9a-f:]{17} RSSI -50 attempt 1\n.*\n.*WiFi STA: Disconnected, reason: 15`)
	log.WaitFor(t, `attempt 2`)
	if w := getWiFi(t, d); w.Status == "got ip" || w.StaIP != "" {
		t.Errorf("connected with a wrong password: %+v", w)
	}
	mosWiFi(t, d, "Nowhere", "whatever1")
	log.WaitFor(t, `WiFi STA: Disconnected, reason: 201`)
	if w := getWiFi(t, d); w.Status != "disconnected" {
		t.Errorf("status without the AP: %+v", w)
	}
}

func dialCtx(ctx context.Context, url string) (*client.Client, error) { return client.Dial(ctx, url) }
