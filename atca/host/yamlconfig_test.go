package host

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"math/big"
	"os"
	"testing"

	"github.com/mosemu/mosemu/atca"
	"github.com/mosemu/mosemu/emu/i2c"
)

// TestSampleConfigProvisioning parses configs/atca-test-config.yaml,
// writes it to a blank chip, locks it, and provisions slot 0 as the seed
// does: write key in slot 4, lock data, encrypted PrivWrite, then checks
// the public key and a signature.
func TestSampleConfigProvisioning(t *testing.T) {
	text, err := os.ReadFile("../../configs/atca-test-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseMosYAML(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		off  int
		want uint16
	}{
		{20 + 0, 0x6487}, {20 + 8, 0x0F8F}, {20 + 14, 0x2082}, {20 + 16, 0x44C4}, {96, 0x0033}, {96 + 8, 0x003C},
	} {
		if got := binary.LittleEndian.Uint16(cfg[tt.off:]); got != tt.want {
			t.Errorf("config bytes %d-%d = %#04x, want %#04x", tt.off, tt.off+1, got, tt.want)
		}
	}
	if cfg[86] != 0x55 || cfg[87] != 0x55 || cfg[18] != 85 {
		t.Fatalf("lock/otp bytes %x %x %x", cfg[86], cfg[87], cfg[18])
	}
	bus := i2c.NewBus()
	bus.Attach(0x60, atca.NewBlank(11))
	d := New(bus, 0x60)
	if err := d.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	back, _ := d.ReadConfig()
	if string(back[16:84]) != string(cfg[16:84]) || string(back[88:]) != string(cfg[88:]) {
		t.Fatal("config read back differs")
	}
	if err := d.LockZone(0); err != nil {
		t.Fatal(err)
	}
	wk := make([]byte, 32)
	rand.Read(wk)
	if err := d.WriteBlock(4, 0, wk); err != nil {
		t.Fatal(err)
	}
	if err := d.LockZone(1); err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := d.PrivWrite(0, k.D.FillBytes(make([]byte, 32)), wk, 4); err != nil {
		t.Fatal(err)
	}
	pub, err := d.PublicKey(0)
	if err != nil || string(pub) != string(append(k.X.FillBytes(make([]byte, 32)), k.Y.FillBytes(make([]byte, 32))...)) {
		t.Fatalf("public key %x %v", pub, err)
	}
	digest := sha256.Sum256([]byte("hello"))
	rs, err := d.Sign(0, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.Verify(&k.PublicKey, digest[:], new(big.Int).SetBytes(rs[:32]), new(big.Int).SetBytes(rs[32:])) {
		t.Fatal("signature does not verify")
	}
}

func FuzzParseMosYAML(f *testing.F) {
	text, _ := os.ReadFile("../../configs/atca-test-config.yaml")
	f.Add(text)
	f.Add([]byte("slotinfo: [1, 2]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseMosYAML(b)
		if err == nil && len(cfg) != 128 {
			t.Fatalf("config of %d bytes", len(cfg))
		}
	})
}
