package emu

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu/flashenc"
	"github.com/mosemu/mosemu/internal/testkit"
)

// esptoolJSResult is what testdata/esptool-js/interop.mjs prints.
type esptoolJSResult struct {
	Chip, Features, MAC, MD5, MD5Legacy, ReadBackMD5, Error string
	Crystal                                                 float64
}

// runEsptoolJS runs interop.mjs against the device's pty and checks what
// esptool-js detected: chip, MAC and, on an ESP32, the features and the
// crystal the factory efuses and UART divider give.
func runEsptoolJS(t *testing.T, d *Device, args ...string) esptoolJSResult {
	t.Helper()
	dir := filepath.Join("testdata", "esptool-js")
	node, err := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "esptool-js"))
	if err != nil || modErr != nil {
		testkit.MissingPeer(t, "needs node and esptool-js (`npm ci` in %s, run by make test-deps)", dir)
	}
	out, err := exec.Command(node, append([]string{filepath.Join(dir, "interop.mjs"), d.SerialPath()}, args...)...).Output()
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	var r esptoolJSResult
	if jerr := json.Unmarshal(lines[len(lines)-1], &r); jerr != nil || err != nil || r.Error != "" {
		t.Fatalf("esptool-js: %v %v %s", err, jerr, out)
	}
	ok := r.MAC == strings.ToLower(macColons(d.mac()))
	if d.Board().Arch == "esp32" {
		ok = ok && r.Chip == "ESP32-D0WDQ6 (revision 1)" && r.Crystal == 40 &&
			strings.Contains(r.Features, "240MHz") && strings.Contains(r.Features, "Dual Core")
	} else {
		ok = ok && r.Chip == "ESP8266EX" && r.Crystal == 26
	}
	if !ok {
		t.Fatalf("esptool-js saw %+v", r)
	}
	return r
}

// TestEsptoolJS drives the device's pty with the real esptool-js (npm),
// through testdata/esptool-js/interop.mjs: chip detection (on an ESP32 the
// revision, 240 MHz rating and crystal from the factory efuses), MAC, a
// compressed flash write through the esptool stub, MD5, read back; on an
// ESP32 and on an ESP8266.
func TestEsptoolJS(t *testing.T) {
	for _, arch := range []string{"esp32", "esp8266"} {
		t.Run(arch, func(t *testing.T) {
			d := startWith(t, Options{Arch: arch, StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 42})
			img := make([]byte, 50000)
			rand.Read(img)
			path := filepath.Join(t.TempDir(), "img.bin")
			os.WriteFile(path, img, 0o644)
			r := runEsptoolJS(t, d, "write", path, "0x300000")
			sum := md5.Sum(img)
			want := hex.EncodeToString(sum[:])
			if r.MD5 != want || r.ReadBackMD5 != want {
				t.Fatalf("esptool-js saw %+v, want MD5 %s", r, want)
			}
			got := make([]byte, len(img))
			d.Flash().ReadAt(got, 0x300000)
			if !bytes.Equal(got, img) {
				t.Fatal("flash content differs from the image esptool-js wrote")
			}
		})
	}
}

// TestEsptoolJSWithUARTRPCDisabled: after rpc.uart.uart_no=-1 (the
// firmware no longer reads UART0) esptool-js still detects the chip.
func TestEsptoolJSWithUARTRPCDisabled(t *testing.T) {
	d := startDevice(t, t.TempDir(), true)
	c := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"uart": map[string]any{"uart_no": -1}}}, "save": true})
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	runEsptoolJS(t, d, "detect")
	if !d.InDownloadMode() {
		t.Fatal("not in download mode after esptool-js connected")
	}
}

// TestEsptoolJSEncryptedWrite writes an image through the esptool stub's
// encrypted paths (FLASH_BEGIN encrypt flag, FLASH_ENCRYPT_DATA 0xD4) with
// a known key in BLK1: the raw flash then holds exactly what espsecure's
// algorithm gives for that key and address.
func TestEsptoolJSEncryptedWrite(t *testing.T) {
	d := startDevice(t, t.TempDir(), true)
	var key [32]byte
	rand.Read(key[:])
	if err := d.Efuses().BurnKey(1, key); err != nil {
		t.Fatal(err)
	}
	if err := d.Efuses().Burn("FLASH_CRYPT_CONFIG", 0xF); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 40000) // a multiple of 32
	rand.Read(img)
	path := filepath.Join(t.TempDir(), "img.bin")
	os.WriteFile(path, img, 0o644)
	r := runEsptoolJS(t, d, "encrypt", path, "0x300000")
	c, _ := flashenc.NewCipher(key, 0xF)
	for _, addr := range []uint32{0x300000, 0x310000} {
		want := make([]byte, len(img))
		c.Encrypt(want, img, addr)
		got := make([]byte, len(img))
		d.Flash().ReadAt(got, int64(addr))
		if !bytes.Equal(got, want) {
			t.Fatalf("raw flash at %#x is not the image encrypted with the BLK1 key", addr)
		}
		sum := md5.Sum(want)
		if md := map[uint32]string{0x300000: r.MD5, 0x310000: r.MD5Legacy}[addr]; md != hex.EncodeToString(sum[:]) {
			t.Fatalf("esptool-js MD5 at %#x: %s", addr, md)
		}
	}
}
