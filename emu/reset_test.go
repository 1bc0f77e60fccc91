package emu

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFactoryReset saves a config level and a file through RPC, resets the
// stopped device, and boots it again: config and files are gone (the
// defaults are back), efuses and the ATECC608A are byte for byte the same.
// With all, the efuses and the chip start over too, the MAC stays.
func TestFactoryReset(t *testing.T) {
	for _, tc := range []struct {
		name     string
		arch     string
		enc, all bool
	}{
		{"plain", "esp32", false, false},
		{"esp8266", "esp8266", false, false},
		{"flash-encryption", "esp32", true, false},
		{"all", "esp32", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d, err := New(Options{StateDir: dir, Arch: tc.arch, HTTPAddr: "127.0.0.1:0", Seed: 7, FlashEncryption: tc.enc})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
			putGet(t, c, "/user.txt", []byte("hello"))
			call(t, c, "Config.Set", map[string]any{"config": map[string]any{"debug": map[string]any{"level": 3}}, "save": true})
			mac := d.mac()
			c.Close()
			d.Close()
			efuses, _ := os.ReadFile(filepath.Join(dir, EfuseFile))
			chip, _ := os.ReadFile(filepath.Join(dir, ATCAFile))

			r, err := FactoryReset(dir, tc.all)
			if err != nil || len(r.Erased) == 0 {
				t.Fatalf("FactoryReset = %+v, %v", r, err)
			}
			e2, _ := os.ReadFile(filepath.Join(dir, EfuseFile))
			c2, _ := os.ReadFile(filepath.Join(dir, ATCAFile))
			if kept := bytes.Equal(efuses, e2) && bytes.Equal(chip, c2); kept == tc.all {
				t.Fatalf("efuses and ATECC kept = %v with all = %v", kept, tc.all)
			}

			d = startDevice(t, dir, false)
			if d.mac() != mac {
				t.Fatalf("MAC changed: %x -> %x", mac, d.mac())
			}
			c = dial(t, "ws://"+d.HTTPAddr()+"/rpc")
			if got := call(t, c, "Config.Get", map[string]any{"key": "debug.level"}); string(got) != "2" {
				t.Fatalf("after reset debug.level = %s, want the default 2", got)
			}
			if got := call(t, c, "FS.List", nil); strings.Contains(string(got), "user.txt") || strings.Contains(string(got), "conf9.json") {
				t.Fatalf("after reset FS.List = %s", got)
			}
		})
	}
}

func TestFactoryResetRefusesNonState(t *testing.T) {
	dir := t.TempDir()
	if _, err := FactoryReset(dir, false); err == nil || !strings.Contains(err.Error(), "not a device state directory") {
		t.Fatalf("FactoryReset of an empty dir: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("FactoryReset created %d files in a directory that was not a device", len(entries))
	}
}

// TestFactoryResetRefusesRunningDevice: a device with its serial port up
// (STATE/serial -> its pty) is not reset under its feet; once it is
// stopped, it is.
func TestFactoryResetRefusesRunningDevice(t *testing.T) {
	dir := t.TempDir()
	d := startDevice(t, dir, true)
	if _, err := FactoryReset(dir, false); err == nil || !strings.Contains(err.Error(), "is running") {
		t.Fatalf("FactoryReset of a running device: %v", err)
	}
	d.Close()
	if _, err := FactoryReset(dir, false); err != nil {
		t.Fatalf("FactoryReset after the device stopped: %v", err)
	}
}
