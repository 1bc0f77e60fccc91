package emu

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEsptoolJS drives the device's pty with the real esptool-js (npm),
// through testdata/esptool-js/interop.mjs: chip detection, MAC, a
// compressed flash write through the esptool stub, MD5, read back; on an
// ESP32 and on an ESP8266.
func TestEsptoolJS(t *testing.T) {
	dir := filepath.Join("testdata", "esptool-js")
	node, err := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "esptool-js"))
	if err != nil || modErr != nil {
		missingPeer(t, "needs node and esptool-js (`npm ci` in %s, run by make test-deps)", dir)
	}
	for _, tc := range []struct{ arch, chip string }{
		{"esp32", "ESP32-D0WDQ6 (revision 1)"},
		{"esp8266", "ESP8266EX"},
	} {
		t.Run(tc.arch, func(t *testing.T) { esptoolJS(t, dir, node, tc.arch, tc.chip) })
	}
}

func esptoolJS(t *testing.T, dir, node, arch, chip string) {
	d, err := New(Options{Arch: arch, StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 50000)
	rand.Read(img)
	path := filepath.Join(t.TempDir(), "img.bin")
	os.WriteFile(path, img, 0o644)
	out, err := exec.Command(node, filepath.Join(dir, "interop.mjs"), d.SerialPath(), path, "0x300000").Output()
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	var r struct{ Chip, MAC, MD5, ReadBackMD5, Error string }
	if jerr := json.Unmarshal(lines[len(lines)-1], &r); jerr != nil || err != nil || r.Error != "" {
		t.Fatalf("esptool-js: %v %v %s", err, jerr, out)
	}
	sum := md5.Sum(img)
	want := hex.EncodeToString(sum[:])
	mac := d.mac()
	if r.Chip != chip || r.MAC != strings.ToLower(macColons(mac)) || r.MD5 != want || r.ReadBackMD5 != want {
		t.Fatalf("esptool-js saw %+v, want MD5 %s", r, want)
	}
	got := make([]byte, len(img))
	d.Flash().ReadAt(got, 0x300000)
	if !bytes.Equal(got, img) {
		t.Fatal("flash content differs from the image esptool-js wrote")
	}
}
