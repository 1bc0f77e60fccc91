package flashenc

import (
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
)

func vectors(t testing.TB) string {
	dir := filepath.Join("..", "..", "..", "shared", "testdata", "flash-encryption")
	if _, err := os.Stat(dir); err != nil {
		// Printed on stderr too, so that `go test` without -v shows that
		// the comparison with espsecure did not run.
		msg := fmt.Sprintf("%s: SKIP: espsecure test vectors not found at %s (the shared/ directory beside the repo)", t.Name(), dir)
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	return dir
}

func readKey(t testing.TB, path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 32 {
		t.Fatalf("key %s: %v", path, err)
	}
	return [32]byte(b)
}

func TestEspsecureVectors(t *testing.T) {
	dir := vectors(t)
	tests := []struct {
		plain, cipher, key string
		addr               uint32
		conf               uint8
	}{
		{"bootloader.bin", "bootloader-encrypted.bin", "256bit_key.bin", 0x1000, 0xF},
		{"bootloader.bin", "bootloader-encrypted-conf0.bin", "256bit_key.bin", 0x1000, 0x0},
		{"bootloader.bin", "bootloader-encrypted-conf3.bin", "256bit_key.bin", 0x1000, 0x3},
		{"bootloader.bin", "bootloader-encrypted-conf9.bin", "256bit_key.bin", 0x1000, 0x9},
		{"bootloader.bin", "bootloader-encrypted-confc.bin", "256bit_key.bin", 0x1000, 0xC},
		{"hello-world-signed.bin", "hello-world-signed-encrypted.bin", "ef-flashencryption-key.bin", 0x20000, 0xF},
	}
	for _, tt := range tests {
		t.Run(tt.cipher, func(t *testing.T) {
			plain, _ := os.ReadFile(filepath.Join(dir, tt.plain))
			want, _ := os.ReadFile(filepath.Join(dir, tt.cipher))
			c, err := NewCipher(readKey(t, filepath.Join(dir, tt.key)), tt.conf)
			if err != nil {
				t.Fatal(err)
			}
			n := len(plain) &^ 15 // espsecure pads the tail with random bytes
			got := make([]byte, n)
			if err := c.Encrypt(got, plain[:n], tt.addr); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want[:n]) {
				t.Fatalf("ciphertext differs from espsecure's")
			}
			back := make([]byte, n)
			c.Decrypt(back, want[:n], tt.addr)
			if !bytes.Equal(back, plain[:n]) {
				t.Fatal("decrypt does not give the plaintext back")
			}
		})
	}
}

func TestTweakedKeys(t *testing.T) {
	key, _ := hex.DecodeString("e63e5c272ae7e59bc31838258ede071e712bdd3812c0c24c6d2abb4587a299df")
	for _, tt := range []struct {
		addr uint32
		want string
	}{
		{0x1000, "e62e5c252ae7a58bc31a3825cede0f16712add3832c0c64c6d28bb45c7a291df"},
		{0x1020, "e62e7c252ee7a50be31a3c25ce5e0f06612adf383280c6444d28bf45c72291ce"},
	} {
		k := TweakKey([32]byte(key), 0xF, tt.addr)
		if hex.EncodeToString(k[:]) != tt.want {
			t.Errorf("tweak @%#x = %x, want %s", tt.addr, k, tt.want)
		}
	}
	// Erased flash read through the engine (256bit_key, conf 0xF, 0x190000).
	c, _ := NewCipher([32]byte(key), 0xF)
	ff := bytes.Repeat([]byte{0xFF}, 32)
	out := make([]byte, 32)
	c.Decrypt(out, ff, 0x190000)
	if hex.EncodeToString(out[:16]) != "7bde67e7fc40b688448b1c5875b23206" || !bytes.Equal(out[:16], out[16:]) {
		t.Errorf("decrypt(0xFF*32) = %x", out)
	}
}

type keys struct {
	on  bool
	key [32]byte
}

func (k *keys) FlashKey() (bool, [32]byte, uint8) { return k.on, k.key, 0xF }

func TestViewAndSecretOnlyInPlaintext(t *testing.T) {
	raw := flash.NewMemory(1 << 20)
	ks := &keys{key: [32]byte{1, 2, 3}}
	v := NewView(raw, ks)
	secret := []byte("TOP-SECRET-WIFI-PASSWORD-0123456")
	v.WriteAt(secret, 0x1000)
	dump := make([]byte, 64)
	raw.ReadAt(dump, 0x1000)
	if !bytes.Contains(dump, secret) {
		t.Fatal("plaintext mode: secret not in the raw dump")
	}
	ks.on = true
	raw.Erase(0x1000, flash.SectorSize)
	if _, err := v.WriteAt(secret, 0x1000); err != nil {
		t.Fatal(err)
	}
	raw.ReadAt(dump, 0x1000)
	if bytes.Contains(dump, secret) {
		t.Fatal("encrypted mode: secret visible in the raw dump")
	}
	got := make([]byte, 7) // unaligned read through the view
	v.ReadAt(got, 0x1004)
	if string(got) != string(secret[4:11]) {
		t.Fatalf("view read %q", got)
	}
	if _, err := v.WriteAt(secret[:5], 0x2000); err == nil {
		t.Fatal("unaligned encrypted write accepted")
	}
}

func benchData() []byte { return bytes.Repeat([]byte{0x5A}, 1<<20) }

// BenchmarkEncrypt is flash encryption of 1 MiB (key tweaked per 32 bytes).
func BenchmarkEncrypt(b *testing.B) {
	c, _ := NewCipher([32]byte{9}, 0xF)
	data := benchData()
	out := make([]byte, len(data))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c.Encrypt(out, data, 0x10000)
	}
}

// BenchmarkAESECBBaseline is plain AES-256-ECB with one key on the same data.
func BenchmarkAESECBBaseline(b *testing.B) {
	blk, _ := aes.NewCipher(make([]byte, 32))
	data := benchData()
	out := make([]byte, len(data))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for i := 0; i < len(data); i += 16 {
			blk.Decrypt(out[i:], data[i:])
		}
	}
}
