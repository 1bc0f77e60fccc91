package emu

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/ota"
	"github.com/mosemu/mosemu/emu/partition"
	lfs "github.com/mosemu/mosemu/fs"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
	"github.com/spf13/afero"
)

// testAppImage builds a valid ESP32 app image with a pseudo-random payload.
func testAppImage(project, version string, payload int) []byte {
	body := make([]byte, payload)
	rand.New(rand.NewSource(int64(payload))).Read(body)
	return ota.AppImage(project, version, time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), body)
}

// testFSImage builds a littlefs image of the fs partition's size with the
// repo's fs package, as `mos build` makes fs.img.
func testFSImage(t *testing.T, files map[string]string) []byte {
	t.Helper()
	fsPart, _ := partition.DefaultESP32().Find("fs_0")
	return fsImage(t, int(fsPart.Size), files)
}

// fsImage is a littlefs image of size bytes holding files.
func fsImage(t *testing.T, size int, files map[string]string) []byte {
	t.Helper()
	dev := flash.NewMemory(int64(size))
	if err := lfs.Format(dev); err != nil {
		t.Fatal(err)
	}
	fsys, err := lfs.Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := afero.WriteFile(fsys, name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fsys.Unmount()
	img := make([]byte, size)
	dev.ReadAt(img, 0)
	return img
}

type bundleFile struct {
	name string
	data []byte
}

// testBundle writes a firmware zip as mos does: stored entries with sizes
// and CRC in the local headers, manifest.json first.
func testBundle(t *testing.T, manifest map[string]any, files ...bundleFile) []byte {
	t.Helper()
	m, _ := json.MarshalIndent(manifest, "", " ")
	entries := []testkit.ZipFile{{Name: "fw/manifest.json", Data: m}}
	for _, f := range files {
		entries = append(entries, testkit.ZipFile{Name: "fw/" + f.name, Data: f.data})
	}
	return testkit.StoredZip(t, entries...)
}

func sha1hex(b []byte) string { s := sha1.Sum(b); return hex.EncodeToString(s[:]) }

// firmwareZip is a complete esp32 bundle of version with fs files.
func firmwareZip(t *testing.T, version string, files map[string]string) []byte {
	app := testAppImage("mosemu", version, 60000)
	fsimg := testFSImage(t, files)
	return testBundle(t, map[string]any{
		"name": "mosemu", "platform": "esp32", "version": version, "build_id": "20261125-120000/" + version + "@test",
		"parts": map[string]any{
			"app": map[string]any{"type": "app", "src": "mosemu.bin", "ptn": "app_0", "cs_sha1": sha1hex(app)},
			"fs":  map[string]any{"type": "fs", "src": "fs.img", "ptn": "fs_0", "cs_sha1": sha1hex(fsimg)},
		}}, bundleFile{"mosemu.bin", app}, bundleFile{"fs.img", fsimg})
}

// mosOTA pushes a bundle as `mos ota` does: OTA.Status, OTA.Begin with
// timeout, commit_timeout and size, OTA.Write of base64 chunks with their
// offset, OTA.End.
func mosOTA(c *client.Client, bundle []byte, chunk, commitTimeout int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.Call(ctx, "OTA.Status", nil)
	if err != nil {
		return err
	}
	var st struct{ State int }
	json.Unmarshal(res, &st)
	if st.State != 0 && st.State != 2 {
		return fmt.Errorf("update is already in progress (%d)", st.State)
	}
	if _, err := c.Call(ctx, "OTA.Begin", map[string]any{"timeout": 600, "commit_timeout": commitTimeout, "size": len(bundle)}); err != nil {
		return fmt.Errorf("OTA.Begin: %w", err)
	}
	for off := 0; off < len(bundle); off += chunk {
		data := bundle[off:min(off+chunk, len(bundle))]
		if _, err := c.Call(ctx, "OTA.Write", map[string]any{"offset": off, "data": base64.StdEncoding.EncodeToString(data)}); err != nil {
			c.Call(ctx, "OTA.End", nil)
			return fmt.Errorf("write failed at offset %d: %w", off, err)
		}
	}
	_, err = c.Call(ctx, "OTA.End", nil)
	return err
}

type sysInfo struct {
	FWVersion string `json:"fw_version"`
	FWID      string `json:"fw_id"`
}

// waitFW polls Sys.GetInfo over new connections until the device runs version.
// checkUpdated waits for the device at url to run the test bundle's 2.0
// from slot 1, not yet committed, with the bundle's index.html and the
// user's user.txt merged in (the fs image's files win), and returns a
// client of the rebooted device.
func checkUpdated(t *testing.T, url string) *client.Client {
	t.Helper()
	si := waitFW(t, url, "2.0")
	if si.FWID != "20261125-120000/2.0@test" {
		t.Errorf("fw_id = %q", si.FWID)
	}
	c := dial(t, url)
	if bs := getBootState(t, c); bs != (bootState{ActiveSlot: 1, IsCommitted: false, RevertSlot: 0, CommitTimeout: 300}) {
		t.Errorf("boot state after update = %+v", bs)
	}
	for name, want := range map[string]string{"index.html": "new index", "user.txt": "user data"} {
		var r struct{ Data string }
		json.Unmarshal(call(t, c, "FS.Get", map[string]any{"filename": name}), &r)
		if b, _ := base64.StdEncoding.DecodeString(r.Data); string(b) != want {
			t.Errorf("%s = %q, want %q", name, b, want)
		}
	}
	return c
}

func waitFW(t *testing.T, url, version string) sysInfo {
	t.Helper()
	var si sysInfo
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := client.Dial(ctx, url)
		if err == nil {
			res, err := c.Call(ctx, "Sys.GetInfo", nil)
			c.Close()
			if err == nil {
				json.Unmarshal(res, &si)
				if si.FWVersion == version {
					cancel()
					return si
				}
			}
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("device did not come up with fw_version %s (last %+v)", version, si)
	return si
}

type bootState struct {
	ActiveSlot    int  `json:"active_slot"`
	IsCommitted   bool `json:"is_committed"`
	RevertSlot    int  `json:"revert_slot"`
	CommitTimeout int  `json:"commit_timeout"`
}

func getBootState(t *testing.T, c *client.Client) bootState {
	t.Helper()
	var bs bootState
	json.Unmarshal(call(t, c, "OTA.GetBootState", nil), &bs)
	return bs
}

func otaDevice(t *testing.T, enc bool) *Device {
	t.Helper()
	d := startWith(t, Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 7})
	if enc { // the factory firmware's next boot encrypts the flash
		if err := d.SetBootloaderFlashEncryption(true); err != nil {
			t.Fatal(err)
		}
		if err := d.Reboot(); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestOTAUpdateCommitAndRollback(t *testing.T) {
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", enc), func(t *testing.T) {
			d := otaDevice(t, enc)
			url := "ws://" + d.HTTPAddr() + "/rpc"
			c := dial(t, url)
			call(t, c, "Config.Set", map[string]any{"config": map[string]any{"device": map[string]any{"sn": "SN-OTA"}}, "save": true})
			putGet(t, c, "/user.txt", []byte("user data"))
			putGet(t, c, "/index.html", []byte("old index"))

			bundle := firmwareZip(t, "2.0", map[string]string{"index.html": "new index", "conf0.json": "{}"})
			if err := mosOTA(c, bundle, 2048, 300); err != nil {
				t.Fatal(err)
			}
			c = checkUpdated(t, url)
			if got := call(t, c, "Config.Get", map[string]any{"key": "device.sn"}); string(got) != `"SN-OTA"` {
				t.Errorf("device.sn after update = %s (conf9.json not merged)", got)
			}
			if enc {
				app, _ := partition.DefaultESP32().Find("app_1")
				raw := make([]byte, 16)
				d.Flash().ReadAt(raw, int64(app.Offset))
				if raw[0] == 0xE9 {
					t.Error("app_1 holds a plaintext image on an encrypted device")
				}
			}
			call(t, c, "OTA.Commit", nil)
			if bs := getBootState(t, c); !bs.IsCommitted || bs.ActiveSlot != 1 {
				t.Errorf("boot state after commit = %+v", bs)
			}
			if _, err := c.Call(context.Background(), "OTA.Commit", nil); err == nil {
				t.Error("a second OTA.Commit succeeded")
			}
			if err := d.Reboot(); err != nil {
				t.Fatal(err)
			}
			waitFW(t, url, "2.0")

			// An update not committed within its timeout rolls back.
			c = dial(t, url)
			if err := mosOTA(c, firmwareZip(t, "3.0", map[string]string{"index.html": "v3"}), 2048, 1); err != nil {
				t.Fatal(err)
			}
			waitFW(t, url, "3.0")
			waitFW(t, url, "2.0")
			c = dial(t, url)
			if bs := getBootState(t, c); !bs.IsCommitted || bs.ActiveSlot != 1 {
				t.Errorf("boot state after rollback = %+v", bs)
			}
		})
	}
}

// TestOTAPowerLossBeforeCommit: the device loses power while running an
// uncommitted update; it comes back on the old firmware.
func TestOTAPowerLossBeforeCommit(t *testing.T) {
	dir := t.TempDir()
	d := startDevice(t, dir, false)
	url := "http://" + d.HTTPAddr() + "/rpc"
	if err := mosOTA(dial(t, url), firmwareZip(t, "2.0", nil), 2048, 300); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, "2.0")
	d.Close()
	d2 := startDevice(t, dir, false)
	waitFW(t, "http://"+d2.HTTPAddr()+"/rpc", FWVersion)
	c := dial(t, "http://"+d2.HTTPAddr()+"/rpc")
	if bs := getBootState(t, c); !bs.IsCommitted || bs.ActiveSlot != 0 {
		t.Errorf("boot state after power loss = %+v", bs)
	}
}

func TestOTARejectsBadBundles(t *testing.T) {
	d := otaDevice(t, false)
	url := "ws://" + d.HTTPAddr() + "/rpc"
	c := dial(t, url)
	good := firmwareZip(t, "2.0", nil)
	app := testAppImage("mosemu", "2.0", 1000)
	fsimg := testFSImage(t, nil)
	manifest := func(platform, appSHA string) map[string]any {
		return map[string]any{"name": "x", "platform": platform, "version": "2.0", "build_id": "b",
			"parts": map[string]any{"app": map[string]any{"src": "a.bin", "cs_sha1": appSHA}, "fs": map[string]any{"src": "fs.img", "cs_sha1": sha1hex(fsimg)}}}
	}
	badImage := append([]byte(nil), app...)
	badImage[len(badImage)-1] ^= 0x55 // checksum byte
	var compressed bytes.Buffer
	zw := zip.NewWriter(&compressed)
	w, _ := zw.Create("manifest.json")
	w.Write([]byte(`{"platform":"esp32"}`))
	zw.Close()
	corruptCRC := append([]byte(nil), good...)
	corruptCRC[len(corruptCRC)/2] ^= 1

	for _, tc := range []struct {
		name, want string
		bundle     []byte
	}{
		{"foreign platform", "Wrong platform", testBundle(t, manifest("esp8266", sha1hex(app)), bundleFile{"a.bin", app}, bundleFile{"fs.img", fsimg})},
		{"wrong checksum", "Digest mismatch", testBundle(t, manifest("esp32", strings.Repeat("0", 40)), bundleFile{"a.bin", app}, bundleFile{"fs.img", fsimg})},
		{"invalid app image", "Failed to finalize app write", testBundle(t, manifest("esp32", sha1hex(badImage)), bundleFile{"a.bin", badImage}, bundleFile{"fs.img", fsimg})},
		{"missing fs", "Incomplete update package", testBundle(t, manifest("esp32", sha1hex(app)), bundleFile{"a.bin", app})},
		{"compressed zip", "compressed", compressed.Bytes()},
		{"corrupt data", "CRC", corruptCRC},
		{"not a zip", "invalid file header", bytes.Repeat([]byte("garbage!"), 100)},
		{"truncated", "Premature end", good[:len(good)/2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := mosOTA(c, tc.bundle, 1024, 300)
			var re *rpc.Error
			if !errors.As(err, &re) || !strings.Contains(re.Message, tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
			var st struct{ State int }
			json.Unmarshal(call(t, c, "OTA.Status", nil), &st)
			if st.State != 0 {
				t.Errorf("state after a failed update = %d", st.State)
			}
			if bs := getBootState(t, c); !bs.IsCommitted || bs.ActiveSlot != 0 {
				t.Errorf("boot state = %+v", bs)
			}
		})
	}
	// The device still runs and boots its firmware, and a good update works.
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, FWVersion)
	if err := mosOTA(dial(t, url), good, 2048, 0); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, "2.0")
	if bs := getBootState(t, dial(t, url)); !bs.IsCommitted || bs.ActiveSlot != 1 {
		t.Errorf("commit_timeout 0 did not commit at boot: %+v", bs)
	}
}

// TestOTAInterruptedTransfer: the client goes away mid-write; the running
// firmware stays, a new update can start after OTA.End, and a reboot
// finds the old firmware.
func TestOTAInterruptedTransfer(t *testing.T) {
	d := otaDevice(t, false)
	url := "ws://" + d.HTTPAddr() + "/rpc"
	c := dial(t, url)
	bundle := firmwareZip(t, "2.0", nil)
	call(t, c, "OTA.Begin", map[string]any{"size": len(bundle)})
	for off := 0; off < len(bundle)/2; off += 2048 {
		call(t, c, "OTA.Write", map[string]any{"offset": off, "data": base64.StdEncoding.EncodeToString(bundle[off : off+2048])})
	}
	// A retried chunk is accepted, a gap is refused.
	call(t, c, "OTA.Write", map[string]any{"offset": 0, "data": base64.StdEncoding.EncodeToString(bundle[:2048])})
	if _, err := c.Call(context.Background(), "OTA.Write", map[string]any{"offset": len(bundle) - 10, "data": "AAAA"}); err == nil {
		t.Error("a write past the received data was accepted")
	}
	c.Close()
	if err := mosOTA(dial(t, url), bundle, 2048, 0); err == nil || !strings.Contains(err.Error(), "in progress") {
		t.Errorf("second update while one is in progress: %v", err)
	}
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, FWVersion)
	if err := mosOTA(dial(t, url), bundle, 2048, 0); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, "2.0")
}

func TestOTAUpdateFromURLAndRevert(t *testing.T) {
	d := otaDevice(t, false)
	bundle := firmwareZip(t, "2.0", nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/fw.zip" {
			http.NotFound(w, r)
			return
		}
		w.Write(bundle)
	}))
	defer srv.Close()
	url := "http://" + d.HTTPAddr() + "/rpc"
	c := dial(t, url)
	if _, err := c.Call(context.Background(), "OTA.Update", map[string]any{"url": srv.URL + "/missing.zip"}); err == nil {
		t.Error("OTA.Update of a 404 URL succeeded")
	}
	call(t, c, "OTA.Update", map[string]any{"url": srv.URL + "/fw.zip", "commit_timeout": 600})
	waitFW(t, url, "2.0")
	c = dial(t, url)
	call(t, c, "OTA.Revert", nil)
	waitFW(t, url, FWVersion)
	if bs := getBootState(t, dial(t, url)); !bs.IsCommitted || bs.ActiveSlot != 0 {
		t.Errorf("boot state after revert = %+v", bs)
	}
}

func TestOTAOverSerial(t *testing.T) {
	d := startDevice(t, t.TempDir(), true)
	c := dial(t, d.SerialPath())
	app := testAppImage("mosemu", "2.0", 5000)
	fsimg := testFSImage(t, map[string]string{"index.html": "serial"})
	bundle := testBundle(t, map[string]any{"name": "mosemu", "platform": "esp32", "version": "2.0", "build_id": "b/2.0",
		"parts": map[string]any{"app": map[string]any{"src": "mosemu.bin", "cs_sha1": sha1hex(app)}, "fs": map[string]any{"src": "fs.img", "cs_sha1": sha1hex(fsimg)}}},
		bundleFile{"mosemu.bin", app}, bundleFile{"fs.img", fsimg})
	if err := mosOTA(c, bundle, 2048, 0); err != nil {
		t.Fatal(err)
	}
	waitFW(t, "http://"+d.HTTPAddr()+"/rpc", "2.0")
}

// TestOTASignedUpdates: with update.key0 and update.sig_req_mask=1 only a
// bundle signed by key 0 (as mos create-fw-bundle --sign-key does) goes in.
func TestOTASignedUpdates(t *testing.T) {
	d := otaDevice(t, false)
	url := "ws://" + d.HTTPAddr() + "/rpc"
	c := dial(t, url)
	good, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	pub, _ := x509.MarshalPKIXPublicKey(&good.PublicKey)
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"update": map[string]any{
		"key0": base64.StdEncoding.EncodeToString(pub), "sig_req_mask": 1}}, "save": true})
	bundle := func(keys ...*ecdsa.PrivateKey) []byte {
		z, err := ota.WriteBundle(ota.BundleSpec{Name: "mosemu", Platform: "esp32", Version: "2.0", BuildID: "b/2.0",
			App: testAppImage("mosemu", "2.0", 1000), FS: testFSImage(t, nil), SignKeys: keys})
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	for name, z := range map[string][]byte{"unsigned": bundle(), "signed by another key": bundle(other), "signed as sig1": bundle(nil, good)} {
		var re *rpc.Error
		if err := mosOTA(c, z, 2048, 0); !errors.As(err, &re) || re.Message != "Signature check failed" {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := mosOTA(c, bundle(good), 2048, 0); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, "2.0")
	// sig_req_mask=0 is a tombstone: no update goes in.
	c = dial(t, url)
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"update": map[string]any{"sig_req_mask": 0}}})
	if err := mosOTA(c, bundle(good), 2048, 0); err == nil {
		t.Error("an update went in with sig_req_mask=0")
	}
}

// TestOTASnapshot: OTA.CreateSnapshot copies the running app and fs to the
// other slot, which then boots with the same files.
func TestOTASnapshot(t *testing.T) {
	for _, enc := range []bool{false, true} {
		d := otaDevice(t, enc)
		url := "ws://" + d.HTTPAddr() + "/rpc"
		c := dial(t, url)
		putGet(t, c, "/user.txt", []byte("kept in the snapshot"))
		if got := call(t, c, "OTA.CreateSnapshot", nil); string(got) != `{"slot": 1}` {
			t.Fatalf("OTA.CreateSnapshot = %s", got)
		}
		call(t, c, "OTA.SetBootState", map[string]any{"active_slot": 1, "revert_slot": 1, "is_committed": true})
		if err := d.Reboot(); err != nil {
			t.Fatal(err)
		}
		c = dial(t, url)
		if bs := getBootState(t, c); bs.ActiveSlot != 1 || !bs.IsCommitted {
			t.Errorf("encrypted=%v: boot state %+v", enc, bs)
		}
		var r struct{ Data string }
		json.Unmarshal(call(t, c, "FS.Get", map[string]any{"filename": "user.txt"}), &r)
		if b, _ := base64.StdEncoding.DecodeString(r.Data); string(b) != "kept in the snapshot" {
			t.Errorf("encrypted=%v: user.txt on the snapshot = %q", enc, b)
		}
		if d.fw == nil || d.fw.boot.App.Label != "app_1" || d.fw.boot.FS.Label != "fs_1" {
			t.Errorf("encrypted=%v: running from %+v", enc, d.fw.boot)
		}
	}
}

// TestOTAKill9MidWrite runs a device in a child process, kills it with
// SIGKILL in the middle of an update, and boots the state again: the old
// firmware runs, and a complete update then goes in.
func TestOTAKill9MidWrite(t *testing.T) {
	serveChildDevice()
	dir := t.TempDir()
	cmd, addr := childDevice(t, "TestOTAKill9MidWrite", dir)
	c := dial(t, "ws://"+addr+"/rpc")
	bundle := firmwareZip(t, "2.0", map[string]string{"index.html": "v2"})
	call(t, c, "OTA.Begin", map[string]any{"size": len(bundle)})
	for off := 0; off < len(bundle)*3/4; off += 2048 { // into the fs image
		call(t, c, "OTA.Write", map[string]any{"offset": off, "data": base64.StdEncoding.EncodeToString(bundle[off:min(off+2048, len(bundle))])})
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	d := startDevice(t, dir, false)
	url := "ws://" + d.HTTPAddr() + "/rpc"
	waitFW(t, url, FWVersion)
	if bs := getBootState(t, dial(t, url)); !bs.IsCommitted || bs.ActiveSlot != 0 {
		t.Errorf("boot state after kill -9 = %+v", bs)
	}
	if err := mosOTA(dial(t, url), bundle, 2048, 0); err != nil {
		t.Fatal(err)
	}
	waitFW(t, url, "2.0")
}

// TestOTAUpdateOverHTTPS: OTA.Update verifies the server against ca.pem,
// through the CA-on-demand loader: refused with the factory bundle, taken
// once the server's CA is in it.
func TestOTAUpdateOverHTTPS(t *testing.T) {
	d := otaDevice(t, false)
	bundle := firmwareZip(t, "2.0", nil)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(bundle) }))
	defer srv.Close()
	url := "ws://" + d.HTTPAddr() + "/rpc"
	c := dial(t, url)
	if _, err := c.Call(context.Background(), "OTA.Update", map[string]any{"url": srv.URL + "/fw.zip"}); err == nil {
		t.Fatal("OTA.Update trusted a server no CA of ca.pem vouches for")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("OTA.Update failed for another reason: %v", err)
	}
	var r struct{ Data string }
	json.Unmarshal(call(t, c, "FS.Get", map[string]any{"filename": "ca.pem"}), &r)
	ca, _ := base64.StdEncoding.DecodeString(r.Data)
	ca = append(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})...)
	call(t, c, "FS.Remove", map[string]any{"filename": "ca.pem"})
	putGet(t, c, "/ca.pem", ca)
	call(t, c, "OTA.Update", map[string]any{"url": srv.URL + "/fw.zip", "commit_timeout": 0})
	waitFW(t, url, "2.0")
}

// TestOTANewFirmwareThatDoesNotBootRevertsItself: an fs image that does not
// mount (its digest right, its content garbage) fails the first boot of the
// update; the device reverts and comes back on the old firmware.
func TestOTANewFirmwareThatDoesNotBootRevertsItself(t *testing.T) {
	var log testkit.SyncBuffer
	d := startWith(t, Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 7, Console: &log})
	url := "ws://" + d.HTTPAddr() + "/rpc"
	garbage := bytes.Repeat([]byte("not a filesystem"), 0x40000/16)
	z, err := ota.WriteBundle(ota.BundleSpec{Name: "mosemu", Platform: "esp32", Version: "2.0", BuildID: "b/2.0",
		App: testAppImage("mosemu", "2.0", 1000), FS: garbage})
	if err != nil {
		t.Fatal(err)
	}
	if err := mosOTA(dial(t, url), z, 2048, 300); err != nil {
		t.Fatal(err)
	}
	log.WaitFor(t, `Boot partition: app_1(.|\n)*Update failed to boot(.|\n)*Reverting to slot 0(.|\n)*Boot partition: app_0`)
	waitFW(t, url, FWVersion)
	if bs := getBootState(t, dial(t, url)); !bs.IsCommitted || bs.ActiveSlot != 0 {
		t.Errorf("boot state = %+v", bs)
	}
}

// TestOTAPollsUpdateURL: with update.url and update.interval the device
// fetches the bundle periodically, applies a new version once and leaves
// the same version alone; update.extra_http_headers go with the request.
func TestOTAPollsUpdateURL(t *testing.T) {
	d := otaDevice(t, false)
	bundle := firmwareZip(t, "2.0", nil)
	var mu sync.Mutex
	fetches, auth := 0, ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fetches++
		auth = r.Header.Get("Authorization")
		mu.Unlock()
		w.Write(bundle)
	}))
	defer srv.Close()
	url := "ws://" + d.HTTPAddr() + "/rpc"
	call(t, dial(t, url), "Config.Set", map[string]any{"config": map[string]any{"update": map[string]any{
		"url": srv.URL + "/fw.zip", "interval": 1, "extra_http_headers": "Authorization: Bearer fleet-token"}}, "save": true, "reboot": true})
	waitFW(t, url, "2.0")
	mu.Lock()
	n, a := fetches, auth
	mu.Unlock()
	if a != "Bearer fleet-token" {
		t.Errorf("Authorization = %q", a)
	}
	// Committed at boot (commit_timeout 0); later polls find the same version.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		more := fetches > n+1
		mu.Unlock()
		if more {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no further polls")
		}
	}
	if bs := getBootState(t, dial(t, url)); bs.ActiveSlot != 1 || !bs.IsCommitted {
		t.Errorf("boot state after polls of the same version: %+v", bs)
	}
}
