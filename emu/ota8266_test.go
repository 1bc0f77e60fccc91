package emu

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu/rboot"
	"github.com/mosemu/mosemu/internal/testkit"
)

// firmwareZip8266 is an esp8266 update bundle of version as a Mongoose OS
// ESP8266 build makes it: the app image ("fw", rBoot v2 format) and the
// root filesystem image ("fs", the size of an rBoot fs slot).
func firmwareZip8266(t *testing.T, platform, version string, files map[string]string) []byte {
	t.Helper()
	lay, _ := rboot.LayoutFor(4 << 20)
	fsimg := fsImage(t, int(lay.Default.FSSizes[0]), files)
	return bundle8266(t, platform, version, fsimg)
}

// bundle8266 is an update bundle of version with the fs image fsimg.
func bundle8266(t *testing.T, platform, version string, fsimg []byte) []byte {
	t.Helper()
	lay, _ := rboot.LayoutFor(4 << 20)
	app := appImage8266(AppName, version, "20261125-120000/"+version+"@test")
	return testBundle(t, map[string]any{
		"name": AppName, "platform": platform, "version": version, "build_id": "20261125-120000/" + version + "@test",
		"parts": map[string]any{
			"fw": map[string]any{"src": AppName + ".bin", "addr": lay.Default.ROMs[0], "addr1": lay.Default.ROMs[1], "cs_sha1": sha1hex(app)},
			"fs": map[string]any{"type": "fs", "src": "fs.bin", "addr": lay.Default.FSAddrs[0], "addr1": lay.Default.FSAddrs[1], "cs_sha1": sha1hex(fsimg)},
		}}, bundleFile{AppName + ".bin", app}, bundleFile{"fs.bin", fsimg})
}

func otaDevice8266(t *testing.T) *Device {
	t.Helper()
	return startDevice8266(t, t.TempDir(), nil)
}

// startDevice8266 starts an ESP8266 device on state dir (console to con
// when not nil).
func startDevice8266(t *testing.T, dir string, con *testkit.SyncBuffer) *Device {
	t.Helper()
	o := Options{Arch: "esp8266", StateDir: dir, HTTPAddr: "127.0.0.1:0", Seed: 7}
	if con != nil {
		o.Console = con
	}
	return startWith(t, o)
}

// rbootConfig reads the rBoot config sector from the device's flash.
func rbootConfig(t *testing.T, d *Device) rboot.Config {
	t.Helper()
	sector := make([]byte, rboot.SectorSize)
	if _, err := d.Flash().ReadAt(sector, rboot.ConfigAddr); err != nil {
		t.Fatal(err)
	}
	c, err := rboot.ParseConfig(sector)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOTAESP8266UpdateCommitAndRevert(t *testing.T) {
	d := otaDevice8266(t)
	url := "ws://" + d.HTTPAddr() + "/rpc"
	c := dial(t, url)
	putGet(t, c, "/user.txt", []byte("user data"))
	waitFW(t, url, FWVersion)

	if err := mosOTA(c, firmwareZip8266(t, "esp8266", "2.0", map[string]string{"index.html": "new index"}), 2048, 300); err != nil {
		t.Fatal(err)
	}
	// Before the reboot: the new app is in slot 1 and rBoot boots it once.
	lay, _ := rboot.LayoutFor(4 << 20)
	if _, err := rboot.Check(d.Flash(), lay.Default.ROMs[1], false); err != nil {
		t.Fatalf("slot 1 at 0x%x: %v", lay.Default.ROMs[1], err)
	}
	c = checkUpdated(t, url)
	call(t, c, "OTA.Commit", nil)
	if rc := rbootConfig(t, d); rc.CurrentROM != 1 || rc.IsFirstBoot != 0 {
		t.Errorf("rBoot config after commit: current_rom %d, is_first_boot %d", rc.CurrentROM, rc.IsFirstBoot)
	}
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, "2.0")

	// The next update goes to slot 0; OTA.Revert goes back to slot 1.
	c = dial(t, url)
	if err := mosOTA(c, firmwareZip8266(t, "esp8266", "3.0", map[string]string{"index.html": "v3"}), 2048, 300); err != nil {
		t.Fatal(err)
	}
	if rc := rbootConfig(t, d); rc.CurrentROM != 0 || rc.PreviousROM != 1 || rc.IsFirstBoot != 1 || rc.FWUpdated != 1 {
		t.Errorf("rBoot config after update: %+v", rc)
	}
	waitFW(t, url, "3.0")
	c = dial(t, url)
	call(t, c, "OTA.Revert", nil)
	waitFW(t, url, "2.0")
	c = dial(t, url)
	if bs := getBootState(t, c); !bs.IsCommitted || bs.ActiveSlot != 1 {
		t.Errorf("boot state after revert = %+v", bs)
	}
	if rc := rbootConfig(t, d); rc.CurrentROM != 1 || rc.IsFirstBoot != 0 {
		t.Errorf("rBoot config after revert: %+v", rc)
	}

	// Not committed within update.commit_timeout: rolled back.
	if err := mosOTA(c, firmwareZip8266(t, "esp8266", "4.0", nil), 2048, 1); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, "4.0")
	waitFW(t, url, "2.0")
}

func TestOTAESP8266RejectsOtherPlatform(t *testing.T) {
	d := otaDevice8266(t)
	url := "ws://" + d.HTTPAddr() + "/rpc"
	c := dial(t, url)
	before := rbootConfig(t, d)
	for _, b := range [][]byte{
		firmwareZip8266(t, "esp32", "2.0", nil),
		firmwareZip(t, "2.0", nil), // an ESP32 build
	} {
		err := mosOTA(c, b, 2048, 300)
		if err == nil || !strings.Contains(err.Error(), "Wrong platform") {
			t.Errorf("wrong-platform bundle: err = %v", err)
		}
	}
	if after := rbootConfig(t, d); after != before {
		t.Errorf("rBoot config changed: %+v -> %+v", before, after)
	}
	waitFW(t, url, FWVersion)
}

// TestOTAESP8266PowerLossBeforeCommit: power lost while the uncommitted
// update runs; rBoot's boot_attempts make it fall back to previous_rom.
func TestOTAESP8266PowerLossBeforeCommit(t *testing.T) {
	dir := t.TempDir()
	d := startDevice8266(t, dir, nil)
	url := "ws://" + d.HTTPAddr() + "/rpc"
	if err := mosOTA(dial(t, url), firmwareZip8266(t, "esp8266", "2.0", nil), 2048, 300); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, "2.0")
	if rc := rbootConfig(t, d); rc.CurrentROM != 1 || rc.PreviousROM != 0 || rc.IsFirstBoot != 1 || rc.BootAttempts != 1 {
		t.Errorf("rBoot config during the first boot: %+v", rc)
	}
	d.Close()
	var con testkit.SyncBuffer
	d2 := startDevice8266(t, dir, &con)
	url = "ws://" + d2.HTTPAddr() + "/rpc"
	con.WaitFor(t, `First boot, attempt 1\n(.|\n)*Boot failed, fallback to fw #0(.|\n)*Booting rom 0 \(0x100000\)`)
	waitFW(t, url, FWVersion)
	if bs := getBootState(t, dial(t, url)); !bs.IsCommitted || bs.ActiveSlot != 0 {
		t.Errorf("boot state after power loss = %+v", bs)
	}
	if rc := rbootConfig(t, d2); rc.CurrentROM != 0 || rc.IsFirstBoot != 0 {
		t.Errorf("rBoot config after fallback: %+v", rc)
	}
}

// TestOTAESP8266FailedFirstBootReverts: an update whose filesystem does
// not mount is reverted by the firmware and rBoot boots the old slot.
func TestOTAESP8266FailedFirstBootReverts(t *testing.T) {
	var con testkit.SyncBuffer
	d := startDevice8266(t, t.TempDir(), &con)
	url := "ws://" + d.HTTPAddr() + "/rpc"
	lay, _ := rboot.LayoutFor(4 << 20)
	garbage := bytes.Repeat([]byte("not a filesystem"), int(lay.Default.FSSizes[1])/16)
	if err := mosOTA(dial(t, url), bundle8266(t, "esp8266", "2.0", garbage), 2048, 300); err != nil {
		t.Fatal(err)
	}
	con.WaitFor(t, `Booting rom 1 \(0x200000\)(.|\n)*esp_main.c:158 +mosemu 2\.0 \(20261125-120000/2\.0@test\)(.|\n)*Update failed to boot(.|\n)*Reverting to slot 0(.|\n)*Booting rom 0 \(0x100000\)`)
	waitFW(t, url, FWVersion)
	if bs := getBootState(t, dial(t, url)); !bs.IsCommitted || bs.ActiveSlot != 0 {
		t.Errorf("boot state = %+v", bs)
	}
}
