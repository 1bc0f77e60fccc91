package emu

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/rboot"
	"github.com/mosemu/mosemu/emu/romloader"
	"github.com/mosemu/mosemu/internal/testkit"
	"golang.org/x/sys/unix"
)

// TestESP8266ImagesMatchEsptool checks the factory images against what the
// real esptool's image_info said about them (testdata/esptool): segment
// load addresses and lengths, and a valid checksum.
func TestESP8266ImagesMatchEsptool(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "esptool", "image_info-esp8266.txt"))
	if err != nil {
		t.Fatal(err)
	}
	reports := strings.Split(string(b), "ESP8266 image header")[1:]
	images := []struct {
		addr uint32
		img  []byte
	}{{0, rbootImage()}, {0x100000, appImage8266(AppName, FWVersion, MGID)}}
	if len(reports) != len(images) {
		t.Fatalf("%d image_info reports", len(reports))
	}
	row := regexp.MustCompile(`(?m)^\s+\d+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+`)
	for i, im := range images {
		fl := flash.NewMemory(4 << 20)
		fl.WriteAt(im.img, int64(im.addr))
		c, err := rboot.Check(fl, im.addr, im.addr == 0)
		if err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
		if !strings.Contains(reports[i], fmt.Sprintf("Checksum: 0x%02x (valid)", c.Checksum)) {
			t.Errorf("image %d: esptool saw another checksum than 0x%02x:\n%s", i, c.Checksum, reports[i])
		}
		rows := row.FindAllStringSubmatch(reports[i], -1)
		if c.V2 {
			rows = rows[1:] // esptool lists the irom0 section as a segment
		}
		if len(rows) != len(c.Segments) {
			t.Fatalf("image %d: esptool %d segments, rboot.Check %d", i, len(rows), len(c.Segments))
		}
		for j, s := range c.Segments {
			if rows[j][1] != fmt.Sprintf("%05x", s.Len) || rows[j][2] != fmt.Sprintf("%08x", s.Addr) {
				t.Errorf("image %d segment %d: esptool %v, ours %#x@%#x", i, j, rows[j][1:], s.Len, s.Addr)
			}
		}
	}
}

// bootLog reboots d and returns the console output of that boot.
func bootLog(t *testing.T, d *Device, con *testkit.SyncBuffer) (string, error) {
	t.Helper()
	con.Reset()
	err := d.Reboot()
	return con.String(), err
}

// TestESP8266BootFromFlash: rBoot boots slot 0 with fs0, falls back to
// slot 1 (and its filesystem fs1) when slot 0 is corrupt, waits when
// nothing is bootable; a bad image at 0x0 stops the ROM. The ROM loader
// answers on the pty in every case.
func TestESP8266BootFromFlash(t *testing.T) {
	var con testkit.SyncBuffer
	d := startWith(t, Options{Arch: "esp8266", StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 5, Console: &con})
	first := con.String()
	for _, want := range []string{
		" ets Jan  8 2013,rst cause:2, boot mode:(3,6)",
		"load 0x40100000, len 80, room 16 \ntail 0\nchksum 0x",
		"rBoot v1.2.1-cesanta1 - richardaburton@gmail.com",
		"Flash Size:   32 Mbit", "Flash Mode:   DIO", "Flash Speed:  80 MHz",
		"Writing default boot config @ 0x7000.",
		"Booting rom 0 (0x100000).",
		"esp_main.c:161          CPU: ESP8266EX, 160 MHz, RAM: 52000 total,",
		"esp_main.c:165          SDK 3.0.6(1391d154); flash: 4M",
		"Init done, RAM: 52000 total, 46000 free",
	} {
		if !strings.Contains(first, want) {
			t.Fatalf("first boot lacks %q:\n%s", want, first)
		}
	}
	var total, free int
	if m := regexp.MustCompile(`RAM: (\d+) total, (\d+) free`).FindStringSubmatch(first); m != nil {
		fmt.Sscan(m[1], &total)
		fmt.Sscan(m[2], &free)
	}
	if free <= 40*1024 || free > total {
		t.Fatalf("heap before init: %d free of %d", free, total)
	}
	for _, bad := range []string{"esp32_main.c", "FreeRTOS"} {
		if strings.Contains(first, bad) {
			t.Fatalf("ESP8266 boot log mentions %s:\n%s", bad, first)
		}
	}
	// The config sector now holds rBoot's defaults.
	sec := make([]byte, rboot.ConfigSize)
	d.Flash().ReadAt(sec, rboot.ConfigAddr)
	conf, err := rboot.ParseConfig(sec)
	if err != nil || conf.ROMs[1] != 0x200000 || conf.FSAddrs[1] != 0x300000 {
		t.Fatalf("config sector: %+v %v", conf, err)
	}
	log, err := bootLog(t, d, &con)
	if err != nil || strings.Contains(log, "Writing default") || strings.Contains(log, "Formatting") {
		t.Fatalf("second boot: %v\n%s", err, log)
	}

	// Slot 1 holds a good app, slot 0 gets corrupted: rBoot falls back.
	app := appImage8266(AppName, FWVersion, MGID)
	d.Flash().WriteAt(app, 0x200000)
	d.Flash().Erase(0x101000, 0x1000) // slot 0's RAM segments and checksum
	log, err = bootLog(t, d, &con)
	if err != nil || !strings.Contains(log, "Rom 0 is bad.\r\nBooting rom 1 (0x200000).") || !strings.Contains(log, "Formatting the root filesystem") {
		t.Fatalf("fallback boot: %v\n%s", err, log)
	}
	d.Flash().ReadAt(sec, rboot.ConfigAddr)
	if conf, _ = rboot.ParseConfig(sec); conf.CurrentROM != 1 {
		t.Fatalf("rBoot did not record rom 1: %+v", conf)
	}
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Sys.GetInfo", nil)

	// Both slots bad: nothing boots, the ROM loader still answers.
	d.Flash().Erase(0x201000, 0x1000)
	log, err = bootLog(t, d, &con)
	if err == nil || !strings.Contains(log, "Rom 1 is bad.\r\nRom 0 is bad.\r\nNo good rom available.") {
		t.Fatalf("no good rom: %v\n%s", err, log)
	}
	romSync(t, d)

	// A corrupt rBoot: the ROM's checksum fails before anything runs.
	d.Flash().WriteAt([]byte{0x00}, 0x10)
	log, err = bootLog(t, d, &con)
	if err == nil || !strings.Contains(log, "csum err\nets_main.c") || strings.Contains(log, "rBoot v1") {
		t.Fatalf("bad checksum at 0x0: %v\n%s", err, log)
	}
	// Erased: no image magic at all.
	d.Flash().Erase(0, 0x1000)
	log, err = bootLog(t, d, &con)
	if err == nil || !strings.Contains(log, "boot mode:(3,6)\n\nets_main.c \n") || strings.Contains(log, "load 0x") {
		t.Fatalf("erased 0x0: %v\n%q", err, log)
	}
	romSync(t, d)
}

// romSync checks that the ROM loader answers SYNC on the pty.
func romSync(t *testing.T, d *Device) {
	t.Helper()
	f, err := os.OpenFile(d.SerialPath(), os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	drain(f)
	f.Write(romRequest(romloader.CmdSync, append([]byte{7, 7, 0x12, 0x20}, make([]byte, 32)...)))
	var dec romloader.Decoder
	buf := make([]byte, 4096)
	f.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		n, err := f.Read(buf)
		if err != nil {
			t.Fatalf("no SYNC reply: %v", err)
		}
		for _, fr := range dec.Feed(buf[:n]) {
			if len(fr) == 10 && fr[1] == romloader.CmdSync && binary.LittleEndian.Uint32(fr[4:]) == 0x20120707 {
				f.Write(romRequest(romloader.CmdFlashEnd, binary.LittleEndian.AppendUint32(nil, 1)))
				return
			}
		}
	}
}
