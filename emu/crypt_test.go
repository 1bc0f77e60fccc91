package emu

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"
)

// TestSecretOnlyVisibleBeforeEncryption writes a file, dumps the raw fs
// partition, turns on flash encryption (bootloader first-boot pass), dumps
// again: the secret is in the first dump only, and the device still reads
// its file through the encryption engine.
func TestSecretOnlyVisibleBeforeEncryption(t *testing.T) {
	dir := t.TempDir()
	d := startDevice(t, dir, false)
	secret := []byte("wifi-password=correct horse battery staple")
	c := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	call(t, c, "FS.Put", map[string]any{"filename": "secret.txt", "data": base64.StdEncoding.EncodeToString(secret)})
	dev := d
	dump := func() []byte {
		b := make([]byte, 0x40000)
		dev.Flash().ReadAt(b, 0x190000)
		return b
	}
	if !bytes.Contains(dump(), secret) {
		t.Fatal("secret not in the plaintext dump")
	}
	if err := d.SetBootloaderFlashEncryption(true); err != nil {
		t.Fatal(err)
	}
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	if !d.Efuses().EncryptionEnabled() {
		t.Fatal("FLASH_CRYPT_CNT not odd after the encrypting boot")
	}
	if bytes.Contains(dump(), secret) {
		t.Fatal("secret still visible in the raw dump after encryption")
	}
	c2 := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	var r struct{ Data string }
	json.Unmarshal(call(t, c2, "FS.Get", map[string]any{"filename": "secret.txt"}), &r)
	if got, _ := base64.StdEncoding.DecodeString(r.Data); !bytes.Equal(got, secret) {
		t.Fatalf("device reads %q", got)
	}
	// Writes after encryption are encrypted too; a restart from the state
	// dir reads everything back.
	call(t, c2, "FS.Put", map[string]any{"filename": "later.txt", "data": base64.StdEncoding.EncodeToString(secret)})
	d.Close()
	d2 := startWith(t, Options{StateDir: dir, HTTPAddr: "127.0.0.1:0"})
	dev = d2
	if bytes.Contains(dump(), secret) {
		t.Fatal("secret visible after restart")
	}
	c3 := dial(t, "http://"+d2.HTTPAddr()+"/rpc")
	json.Unmarshal(call(t, c3, "FS.Get", map[string]any{"filename": "later.txt"}), &r)
	if got, _ := base64.StdEncoding.DecodeString(r.Data); !bytes.Equal(got, secret) {
		t.Fatalf("after restart device reads %q", got)
	}
}
