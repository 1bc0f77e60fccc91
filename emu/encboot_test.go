package emu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mosemu/mosemu/efuse"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/flashenc"
	"github.com/mosemu/mosemu/internal/testkit"
)

// TestNewDeviceWithFlashEncryption is `mosemu run --state NEW
// --flash-encryption`: the first boot encrypts the flash and burns the
// efuses, encrypts the factory fs image in place, the chip resets and
// mounts it in the decrypted view, and the device answers RPC over the UART
// and WebSocket; what it stores is ciphertext in the raw flash; a restart
// boots again.
func TestNewDeviceWithFlashEncryption(t *testing.T) {
	dir := t.TempDir()
	con := &testkit.SyncBuffer{}
	d, err := New(Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 7, FlashEncryption: true, Console: con})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Start(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, con.String())
	}
	for _, want := range []string{"flash_encrypt: Flash encryption completed", "rst:0x3 (SW_RESET)", "flash encryption is enabled (3 plaintext flashes left)"} {
		if !strings.Contains(con.String(), want) {
			t.Fatalf("console lacks %q:\n%s", want, con.String())
		}
	}
	ef, err := efuse.Load(filepath.Join(dir, EfuseFile), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !ef.EncryptionEnabled() || ef.FlashEncryptionKey() == [32]byte{} {
		t.Fatal("efuse.bin does not hold the burnt key and an odd FLASH_CRYPT_CNT")
	}
	u := dial(t, d.SerialPath())
	call(t, u, "Sys.GetInfo", nil)
	w := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	secret := []byte("encrypted at rest: a password nobody may dump")
	call(t, w, "FS.Put", map[string]any{"filename": "secret.txt", "data": base64.StdEncoding.EncodeToString(secret)})
	raw := make([]byte, 0x40000)
	d.Flash().ReadAt(raw, 0x190000)
	if bytes.Contains(raw, secret) || bytes.Contains(raw, []byte("conf0.json")) {
		t.Fatal("the raw fs partition holds plaintext")
	}
	// The factory fs image, encrypted in place, is read through the engine.
	if ls := call(t, w, "FS.List", nil); !bytes.Contains(ls, []byte("conf0.json")) {
		t.Fatalf("FS.List: %s", ls)
	}
	d.Close()

	d2 := startWith(t, Options{StateDir: dir, HTTPAddr: "127.0.0.1:0"})
	var r struct{ Data string }
	json.Unmarshal(call(t, dial(t, "http://"+d2.HTTPAddr()+"/rpc"), "FS.Get", map[string]any{"filename": "secret.txt"}), &r)
	if got, _ := base64.StdEncoding.DecodeString(r.Data); !bytes.Equal(got, secret) {
		t.Fatalf("after restart the device reads %q", got)
	}
}

// TestKill9DuringFirstBootEncryption kills the process while the
// bootloader encrypts the flash on first boot. As on a real chip: the key
// and FLASH_CRYPT_CONFIG burnt before the cut are kept, FLASH_CRYPT_CNT is
// still even, the regions encrypted so far are ciphertext under that key
// and the rest is as it was; the next boot finds an encrypted bootloader
// it cannot read (invalid header loop) and the ROM loader still answers.
func TestKill9DuringFirstBootEncryption(t *testing.T) {
	if dir := os.Getenv("MOSEMU_ENC_CHILD"); dir != "" {
		d, err := New(Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Seed: 9, FlashEncryption: true})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		d.encryptHook = func(region string) {
			if region == "fs_0" {
				fmt.Println("MID")
				select {}
			}
		}
		d.Start(context.Background())
		fmt.Println("ERR boot finished")
		os.Exit(1)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9DuringFirstBootEncryption$")
	cmd.Env = append(os.Environ(), "MOSEMU_ENC_CHILD="+dir)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "MID" {
		cmd.Process.Kill()
		t.Fatalf("child said %q", line)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	ef, err := efuse.Load(filepath.Join(dir, EfuseFile), 0)
	if err != nil {
		t.Fatal(err)
	}
	key := ef.FlashEncryptionKey()
	if key == [32]byte{} || ef.FlashCryptConfig() != 0xF || ef.EncryptionEnabled() {
		t.Fatalf("efuses after the cut: key set %v, FLASH_CRYPT_CONFIG %#x, encryption enabled %v", key != [32]byte{}, ef.FlashCryptConfig(), ef.EncryptionEnabled())
	}
	fl, err := flash.Open(filepath.Join(dir, FlashFile), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := flashenc.NewCipher(key, 0xF)
	headerUnder := func(off int64) (raw, plain byte) {
		b := make([]byte, 32)
		fl.ReadAt(b, off)
		p := make([]byte, 32)
		c.Decrypt(p, b, uint32(off))
		return b[0], p[0]
	}
	for _, off := range []int64{0x1000, 0x10000} { // bootloader, app_0: encrypted before the cut
		if raw, plain := headerUnder(off); raw == 0xE9 || plain != 0xE9 {
			t.Fatalf("image at %#x: raw %#x, decrypted %#x: not encrypted with the kept key", off, raw, plain)
		}
	}
	fs := make([]byte, 0x40000)
	fl.ReadAt(fs, 0x190000)
	if !bytes.Contains(fs, []byte("conf0.json")) { // the factory fs image, still plaintext
		t.Fatal("fs_0 was touched though the cut came before it")
	}
	fl.Close()

	con := &testkit.SyncBuffer{}
	d := newSerialDevice(t, dir, con)
	err = d.Start(context.Background())
	var be *BootError
	if !errors.As(err, &be) || be.Stage != "ROM" { // "invalid header: 0x...", unless the ciphertext starts with 0xE9

		t.Fatalf("boot after the cut: %v\n%s", err, con.String())
	}
	h := openROMHost(t, d)
	h.sync()
}

// TestFlashEncryptionOverBlankFS: a new encrypting device whose fs
// partition is erased (a build without an fs image) gets it encrypted whole
// on first boot: erased in the decrypted view, so the firmware formats it
// there and boots (the README walkthrough's failure before: "no valid
// commit in metadata pair").
func TestFlashEncryptionOverBlankFS(t *testing.T) {
	con := &testkit.SyncBuffer{}
	d, err := New(Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 8, FlashEncryption: true, Console: con})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Flash().Erase(0x190000, 0x40000)
	if err := d.Start(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, con.String())
	}
	if !strings.Contains(con.String(), "Formatting the root filesystem") {
		t.Fatalf("no format:\n%s", con.String())
	}
	call(t, dial(t, "http://"+d.HTTPAddr()+"/rpc"), "FS.List", nil)
}
