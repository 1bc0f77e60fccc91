package emu

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/flash"
	lfs "github.com/mosemu/mosemu/fs"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/spf13/afero"
)

func TestParseWire(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Wire
		err  bool
	}{
		{in: "atecc608a:sda=12,scl=14,addr=0x60", want: Wire{PartATECC608A, 12, 14, 0x60}},
		{in: "ATECC608A:scl=22, sda=21", want: Wire{PartATECC608A, 21, 22, 0x60}},
		{in: "atecc608a:sda=4,scl=5,addr=88", want: Wire{PartATECC608A, 4, 5, 0x58}},
		{in: "atecc608a:none", want: Wire{PartATECC608A, -1, -1, 0x60}},
		{in: "atecc608a:sda=12", err: true},
		{in: "atecc608a:sda=12,scl=12", err: true},
		{in: "atecc608a:sda=12,scl=14,addr=0xC0", err: true},
		{in: "atecc608a:sda=12,scl=14,sda=13", err: true},
		{in: "atecc608a:sda=x,scl=14", err: true},
		{in: "atecc608a:sda=12,scl=14,speed=1", err: true},
		{in: "bme280:sda=12,scl=14", err: true},
		{in: "atecc608a", err: true},
		{in: "atecc608a:sda=40,scl=14", err: true},
	} {
		got, err := ParseWire(tc.in)
		if (err != nil) != tc.err || err == nil && got != tc.want {
			t.Errorf("%q: %+v %v", tc.in, got, err)
		}
		if err == nil {
			if again, _ := ParseWire(got.String()); again != got {
				t.Errorf("%q: String %q does not parse back", tc.in, got.String())
			}
		}
	}
}

// setAndReboot saves a config change over RPC and reboots the device.
func setAndReboot(t *testing.T, d *Device, conf map[string]any) error {
	t.Helper()
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": conf, "save": true})
	return d.Reboot()
}

// atcaGetConfig calls ATCA.GetConfig and returns its error.
func atcaGetConfig(t *testing.T, d *Device) error {
	t.Helper()
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Call(ctx, "ATCA.GetConfig", nil)
	return err
}

// TestI2CWiringESP8266 is the workshop's wiring step on a NodeMCU: the
// chip is on GPIO12/14; the firmware finds it only with i2c.enable and the
// same pins in i2c.sda_gpio/i2c.scl_gpio.
func TestI2CWiringESP8266(t *testing.T) {
	var con testkit.SyncBuffer
	dir := t.TempDir()
	d := startWith(t, Options{Arch: "esp8266", StateDir: dir, HTTPAddr: "127.0.0.1:0", Seed: 7, Console: &con})
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	var i2cCfg map[string]any
	json.Unmarshal(call(t, c, "Config.Get", map[string]any{"key": "i2c"}), &i2cCfg)
	if i2cCfg["enable"] != false || i2cCfg["sda_gpio"] != 12.0 || i2cCfg["scl_gpio"] != 14.0 || i2cCfg["freq"] != 100000.0 {
		t.Fatalf("ESP8266 i2c defaults: %v", i2cCfg)
	}

	// ATCA without I2C: the atca lib's init fails and so does Mongoose OS's.
	con.Reset()
	if err := setAndReboot(t, d, map[string]any{"sys": map[string]any{"atca": map[string]any{"enable": true}}}); err == nil {
		t.Fatal("boot succeeded with sys.atca.enable and no I2C")
	}
	if !strings.Contains(con.String(), "ATCA requires I2C to be enabled (i2c.enable=true)") {
		t.Fatalf("console:\n%s", con.String())
	}
	// Recover as a user would: rewrite the config in flash (here from the
	// host, as `mos put conf9.json` of a reflashed device would) and boot.
	d.Close()
	d = reopenWithConfig(t, dir, &con, `{"sys":{"atca":{"enable":true}},"i2c":{"enable":true}}`, nil)

	// Defaults match the wiring: the chip answers.
	if !strings.Contains(con.String(), "I2C GPIO init ok (SDA: 12, SCL: 14, freq: 100000)") ||
		!strings.Contains(con.String(), "ATECC608A @ 0/0x60: rev 0x6002") {
		t.Fatalf("console:\n%s", con.String())
	}
	if err := atcaGetConfig(t, d); err != nil {
		t.Fatalf("ATCA.GetConfig with matching wiring: %v", err)
	}

	// The pins most NodeMCU tutorials use (D2/D1): nothing answers there.
	con.Reset()
	if err := setAndReboot(t, d, map[string]any{"i2c": map[string]any{"sda_gpio": 4, "scl_gpio": 5}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(con.String(), "ATCA: Failed to get chip info (0/0x60)") || !strings.Contains(con.String(), "ATCA: Chip is not available") {
		t.Fatalf("console:\n%s", con.String())
	}
	if err := atcaGetConfig(t, d); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("ATCA.GetConfig with the chip off the bus: %v", err)
	}

	// Swapped lines do not work either; the right ones do again.
	for _, tc := range []struct {
		sda, scl int
		ok       bool
	}{{14, 12, false}, {12, 14, true}} {
		if err := setAndReboot(t, d, map[string]any{"i2c": map[string]any{"sda_gpio": tc.sda, "scl_gpio": tc.scl}}); err != nil {
			t.Fatal(err)
		}
		if err := atcaGetConfig(t, d); (err == nil) != tc.ok {
			t.Fatalf("SDA %d SCL %d: %v", tc.sda, tc.scl, err)
		}
	}

	// A flash pin cannot carry I2C: the i2c lib refuses and init stops.
	con.Reset()
	if err := setAndReboot(t, d, map[string]any{"i2c": map[string]any{"sda_gpio": 9}}); err == nil {
		t.Fatal("boot succeeded with SDA on a flash pin")
	}
	if !strings.Contains(con.String(), "Invalid I2C GPIO settings") {
		t.Fatalf("console:\n%s", con.String())
	}
}

// reopenWithConfig writes conf9.json into the device's filesystem while it
// is stopped (through a fresh boot with a config that cannot fail) and
// starts it again with wiring.
func reopenWithConfig(t *testing.T, dir string, con *testkit.SyncBuffer, conf9 string, wiring []Wire) *Device {
	t.Helper()
	d, err := New(Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Console: con, Wiring: wiring})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	d.Start(context.Background()) // fails: the saved config still has ATCA without I2C
	if err := d.writeConf9ForTest(conf9); err != nil {
		t.Fatal(err)
	}
	con.Reset()
	if err := d.Reboot(); err != nil {
		t.Fatalf("boot: %v\n%s", err, con.String())
	}
	return d
}

// TestWiringOption rewires the chip from the command line option and keeps
// it in the state file.
func TestWiringOption(t *testing.T) {
	var con testkit.SyncBuffer
	dir := t.TempDir()
	w := []Wire{{Part: PartATECC608A, SDA: 4, SCL: 5, Addr: 0x58}}
	d, err := New(Options{Arch: "esp8266", StateDir: dir, HTTPAddr: "127.0.0.1:0", Console: &con, Wiring: w})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := setAndReboot(t, d, map[string]any{"sys": map[string]any{"atca": map[string]any{"enable": true, "i2c_addr": 0x58}},
		"i2c": map[string]any{"enable": true, "sda_gpio": 4, "scl_gpio": 5}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(con.String(), "ATECC608A @ 0/0x58") {
		t.Fatalf("console:\n%s", con.String())
	}
	d.Close()
	b, _ := os.ReadFile(filepath.Join(dir, StateFile))
	if !strings.Contains(string(b), `"sda": 4`) {
		t.Fatalf("state file: %s", b)
	}
	// Reopened without the option: the state file's wiring holds; the
	// chip is unplugged with "none".
	d, err = New(Options{StateDir: dir, HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.wiring(); len(got) != 1 || got[0] != w[0] {
		t.Fatalf("wiring after reopen: %+v", got)
	}
	d.Close()
	none, _ := ParseWire("atecc608a:none")
	con.Reset()
	startWith(t, Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Console: &con, Wiring: []Wire{none}})
	if !strings.Contains(con.String(), "ATCA: Chip is not available") {
		t.Fatalf("console:\n%s", con.String())
	}
}

// TestI2CDefaultsESP32: the ESP32's i2c section (hardware unit 0, SDA 32,
// SCL 33) reaches the default-wired chip.
func TestI2CDefaultsESP32(t *testing.T) {
	var con testkit.SyncBuffer
	d := startWith(t, Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 3, Console: &con})
	if err := setAndReboot(t, d, map[string]any{"sys": map[string]any{"atca": map[string]any{"enable": true}},
		"i2c": map[string]any{"enable": true}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(con.String(), "I2C0 init ok (SDA: 32, SCL: 33, freq: 100000)") {
		t.Fatalf("console:\n%s", con.String())
	}
	if err := atcaGetConfig(t, d); err != nil {
		t.Fatal(err)
	}
}

// writeConf9ForTest writes conf9.json into the ESP8266 root filesystem
// (slot 0) of a halted device, as a host tool with the flash would.
func (d *Device) writeConf9ForTest(conf string) error {
	fsys, err := lfs.Mount(flash.NewWindow(d.flash, 0x8000, 0x40000))
	if err != nil {
		return err
	}
	defer fsys.Unmount()
	return afero.WriteFile(fsys, "conf9.json", []byte(conf), 0o644)
}

// FuzzParseWire: any --wire text parses or is rejected, and what parses
// prints back to the same wiring.
func FuzzParseWire(f *testing.F) {
	f.Add("atecc608a:sda=12,scl=14,addr=0x60")
	f.Add("atecc608a:none")
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWire(s)
		if err != nil {
			return
		}
		if again, err := ParseWire(w.String()); err != nil || again != w {
			t.Fatalf("%q -> %q -> %+v %v", s, w.String(), again, err)
		}
	})
}

// TestI2CDebug: with i2c.debug and debug.level 3 the bus activity of the
// ATCA init shows on the console, as mgos_i2c_gpio.c logs it.
func TestI2CDebug(t *testing.T) {
	var con testkit.SyncBuffer
	d := startWith(t, Options{Arch: "esp8266", StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 8, Console: &con})
	con.Reset()
	if err := setAndReboot(t, d, map[string]any{"sys": map[string]any{"atca": map[string]any{"enable": true}},
		"i2c": map[string]any{"enable": true, "debug": true}, "debug": map[string]any{"level": 3}}); err != nil {
		t.Fatal(err)
	}
	log := con.String()
	for _, want := range []string{" addr 0x60, mode W => ab 0xc0", " sent 0xc0, recd ACK", " addr 0x60, mode R => ab 0xc1", " stop"} {
		if !strings.Contains(log, want) {
			t.Fatalf("console lacks %q:\n%s", want, log)
		}
	}
}
