package emu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/mqtt"
)

// TestConfigShowsWhatTheDeviceUses: the embedded broker the emulator gives
// the device is in conf5.json, so Config.Get shows it; the user's conf9.json
// still wins; a fresh fs holds conf0.json and ca.pem.
func TestConfigShowsWhatTheDeviceUses(t *testing.T) {
	b, err := mqtt.StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dir := t.TempDir()
	d := startWith(t, Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", MQTTBroker: b.Addr(), Seed: 12})
	waitMQTT(t, d, true)
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	if got := call(t, c, "Config.Get", map[string]any{"key": "mqtt.server"}); string(got) != `"`+b.Addr()+`"` {
		t.Errorf("mqtt.server = %s, the device uses %s", got, b.Addr())
	}
	if got := call(t, c, "Config.Get", map[string]any{"key": "mqtt.enable"}); string(got) != "true" {
		t.Errorf("mqtt.enable = %s", got)
	}
	var list []string
	json.Unmarshal(call(t, c, "FS.List", nil), &list)
	for _, want := range []string{"conf0.json", "ca.pem", "conf5.json"} {
		if !strings.Contains(strings.Join(list, " "), want) {
			t.Errorf("FS.List = %v, no %s", list, want)
		}
	}
	var r struct{ Data string }
	json.Unmarshal(call(t, c, "FS.Get", map[string]any{"filename": "conf0.json"}), &r)
	conf0, _ := base64.StdEncoding.DecodeString(r.Data)
	var defaults struct {
		Device struct{ ID string }     `json:"device"`
		MQTT   struct{ Server string } `json:"mqtt"`
	}
	if err := json.Unmarshal(conf0, &defaults); err != nil || defaults.Device.ID != "esp32_??????" || defaults.MQTT.Server != "iot.eclipse.org:1883" {
		t.Errorf("conf0.json: %v %+v", err, defaults)
	}
	// The user's choice wins over the provisioning level.
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"mqtt": map[string]any{"enable": false}}, "save": true})
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	waitMQTT(t, d, false)
	c = dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	if got := call(t, c, "Config.Get", map[string]any{"key": "mqtt.enable"}); string(got) != "false" {
		t.Errorf("mqtt.enable after the user disabled it = %s", got)
	}
	if d.MQTTBroker() != "" {
		t.Errorf("device still uses %s", d.MQTTBroker())
	}
}

// TestProvisionFollowsTheBroker: a restart without the embedded broker
// removes the provisioning, with another broker rewrites it.
func TestProvisionFollowsTheBroker(t *testing.T) {
	dir := t.TempDir()
	for _, broker := range []string{"127.0.0.1:1", "127.0.0.1:2", ""} {
		d, err := New(Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", MQTTBroker: broker, Seed: 13})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
		want := `"` + broker + `"`
		if broker == "" {
			want = `"iot.eclipse.org:1883"`
		}
		if got := call(t, c, "Config.Get", map[string]any{"key": "mqtt.server"}); string(got) != want {
			t.Errorf("broker %q: mqtt.server = %s", broker, got)
		}
		c.Close()
		d.Close()
	}
}
