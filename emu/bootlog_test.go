package emu

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/internal/golden"
	"github.com/mosemu/mosemu/internal/testkit"
)

// lastBoot returns the console text of the last boot: from the ROM's
// first line to the Mongoose OS banner (excluded), or to the end.
func lastBoot(console string) string {
	i := max(strings.LastIndex(console, "ets Jun  8 2016"), strings.LastIndex(console, " ets Jan  8 2013"))
	if i < 0 {
		return ""
	}
	s := console[i:]
	for _, fw := range []string{"mgos_init.c", "esp_main.c"} { // the firmware's first line
		if j := strings.Index(s, fw); j >= 0 {
			s = s[:j]
		}
	}
	return s
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, filepath.Join("boot", name), []byte(got))
}

// TestBootLogGolden checks the console of a power-on, of the boot after
// Sys.Reboot (rst:0xc SW_CPU_RESET), of an ESP8266 power-on, and of the
// failures (erased app, erased bootloader) against golden files.
func TestBootLogGolden(t *testing.T) {
	t.Run("esp32-poweron", func(t *testing.T) {
		con := &testkit.SyncBuffer{}
		d := newSerialDevice(t, t.TempDir(), con)
		if err := d.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		checkGolden(t, "esp32-poweron.txt", lastBoot(con.String()))
		c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
		call(t, c, "Sys.Reboot", map[string]any{"delay_ms": 10})
		testkit.WaitUntil(t, "the reboot", func() bool { return strings.Count(con.String(), "Init done") == 2 })
		checkGolden(t, "esp32-sys-reboot.txt", lastBoot(con.String()))
	})
	t.Run("esp8266-poweron", func(t *testing.T) {
		con := &testkit.SyncBuffer{}
		startWith(t, Options{Arch: "esp8266", StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 42, Console: con})
		checkGolden(t, "esp8266-poweron.txt", lastBoot(con.String()))
	})
	for _, tc := range []struct {
		name  string
		erase func(*flash.Chip)
	}{
		{"esp32-erased-app.txt", func(f *flash.Chip) { f.Erase(0x10000, 0x180000) }},
		{"esp32-erased-bootloader.txt", func(f *flash.Chip) { f.Erase(0x1000, 0x7000) }},
		{"esp32-corrupt-app-checksum.txt", func(f *flash.Chip) { f.WriteAt([]byte{0x00}, 0x10000+24+8) }}, // app desc magic
		{"esp32-corrupt-app-hash.txt", func(f *flash.Chip) { f.WriteAt(make([]byte, 4), 0x10000+1330) }},  // appended SHA-256
		{"esp32-corrupt-partition-table.txt", func(f *flash.Chip) { f.WriteAt([]byte{0x00}, 0x8005) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			con := &testkit.SyncBuffer{}
			d := newSerialDevice(t, t.TempDir(), con)
			tc.erase(d.Flash())
			if err := d.Start(context.Background()); err == nil {
				t.Fatal("booted")
			}
			checkGolden(t, tc.name, lastBoot(con.String()))
		})
	}
}

// otaEntry is an esp_ota_select_entry_t with a valid CRC.
func otaEntry(seq uint32) []byte {
	e := bytes.Repeat([]byte{0xFF}, 32)
	binary.LittleEndian.PutUint32(e[0:], seq)
	binary.LittleEndian.PutUint32(e[28:], crc32.Update(0xFFFFFFFF, crc32.IEEETable, e[0:4]))
	return e
}

// TestBootloaderFollowsOTAData: with app_1 holding an image and otadata
// selecting sequence 2 (slot 1), the bootloader loads app_1; a bad CRC in
// otadata falls back to OTA 0.
func TestBootloaderFollowsOTAData(t *testing.T) {
	con := &testkit.SyncBuffer{}
	d := newSerialDevice(t, t.TempDir(), con)
	img := make([]byte, 0x1000)
	d.Flash().ReadAt(img, 0x10000)
	d.Flash().WriteAt(img, 0x1D0000)
	d.Flash().WriteAt(otaEntry(1), 0xD000)
	d.Flash().WriteAt(otaEntry(2), 0xE000)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Loaded app from partition at offset 0x1d0000", "Boot partition: app_1"} {
		if !strings.Contains(con.String(), want) {
			t.Fatalf("console lacks %q:\n%s", want, con.String())
		}
	}
	d.Flash().Erase(0xE000, 0x1000)
	bad := otaEntry(3)
	bad[28] ^= 1
	d.Flash().WriteAt(bad, 0xE000)
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	if boot := lastBoot(con.String()); !strings.Contains(boot, "Loaded app from partition at offset 0x10000") {
		t.Fatalf("with otadata seq 1 valid and seq 3 corrupt:\n%s", boot)
	}
}
