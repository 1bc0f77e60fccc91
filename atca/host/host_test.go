package host

import (
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"math/big"
	"testing"

	"github.com/mosemu/mosemu/atca"
	"github.com/mosemu/mosemu/emu/i2c"
)

// provisioned returns a driver for a chip with both zones locked and an
// ECC key in slot 0 (external signing).
func provisioned(t testing.TB) (*Driver, *ecdsa.PrivateKey) {
	c := atca.NewBlank(7)
	bus := i2c.NewBus()
	bus.Attach(0x60, c)
	d := New(bus, 0x60)
	cfg, err := d.ReadConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg[20] = 0x81
	if err := d.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := d.LockZone(0); err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := d.PrivWrite(0, k.D.FillBytes(make([]byte, 32)), nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.LockZone(1); err != nil {
		t.Fatal(err)
	}
	return d, k
}

func TestSignerAndLockState(t *testing.T) {
	d, k := provisioned(t)
	cl, dl, err := d.Locked()
	if err != nil || !cl || !dl {
		t.Fatalf("locked %v %v %v", cl, dl, err)
	}
	s, err := NewSigner(d, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	sig, err := s.Sign(rand.Reader, digest[:], nil)
	if err != nil || !ecdsa.VerifyASN1(&k.PublicKey, digest[:], sig) {
		t.Fatalf("signature: %v", err)
	}
	if err := d.LockZone(0); err == nil {
		t.Fatal("locking a locked config zone succeeded")
	}
}

func TestVerifyECDHCounterSHAAES(t *testing.T) {
	c := atca.NewBlank(9)
	bus := i2c.NewBus()
	bus.Attach(0x60, c)
	d := New(bus, 0x60)
	cfg, _ := d.ReadConfig()
	cfg[13] |= 1                                           // AES enabled
	binary.LittleEndian.PutUint16(cfg[20+2*2:], 0x2087)    // slot 2: ECC, ext sign + ECDH
	binary.LittleEndian.PutUint16(cfg[96+2*5:], 6<<2|0x20) // slot 5: AES key
	binary.LittleEndian.PutUint16(cfg[20+2*5:], 0x0000)    // written in the clear
	if err := d.WriteConfig(cfg); err != nil || d.LockZone(0) != nil {
		t.Fatal("config", err)
	}
	aesKey := make([]byte, 32)
	rand.Read(aesKey)
	if err := d.WriteBlock(5, 0, aesKey); err != nil {
		t.Fatal(err)
	}
	mine, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := d.PrivWrite(2, mine.D.FillBytes(make([]byte, 32)), nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.LockZone(1); err != nil {
		t.Fatal(err)
	}
	// Verify with an external key.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("msg"))
	r, s, _ := ecdsa.Sign(rand.Reader, other, digest[:])
	sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	pub := append(other.X.FillBytes(make([]byte, 32)), other.Y.FillBytes(make([]byte, 32))...)
	if ok, err := d.Verify(digest[:], sig, pub); !ok || err != nil {
		t.Fatalf("good signature: %v %v", ok, err)
	}
	sig[5] ^= 1
	if ok, err := d.Verify(digest[:], sig, pub); ok || err != nil {
		t.Fatalf("bad signature: %v %v", ok, err)
	}
	// ECDH from a slot and from TempKey agree with Go's.
	sx, _ := elliptic.P256().ScalarMult(other.X, other.Y, mine.D.Bytes())
	if pms, err := d.ECDH(2, pub); err != nil || string(pms) != string(sx.FillBytes(make([]byte, 32))) {
		t.Fatalf("ECDH slot: %x %v", pms, err)
	}
	ephPub, compute, err := d.ECDHEphemeral()
	if err != nil {
		t.Fatal(err)
	}
	pms, err := compute(pub)
	ex, ey := new(big.Int).SetBytes(ephPub[:32]), new(big.Int).SetBytes(ephPub[32:])
	want, _ := elliptic.P256().ScalarMult(ex, ey, other.D.Bytes())
	if err != nil || string(pms) != string(want.FillBytes(make([]byte, 32))) {
		t.Fatalf("ECDH TempKey: %x %v", pms, err)
	}
	if _, err := compute(pub); err == nil {
		t.Fatal("TempKey private key used twice")
	}
	// Counter, SHA, AES.
	for i := 1; i <= 3; i++ {
		if v, err := d.Counter(1, true); err != nil || v != uint32(i) {
			t.Fatalf("counter %d: %v", v, err)
		}
	}
	long := make([]byte, 150)
	rand.Read(long)
	if h, err := d.SHA256(long); err != nil || string(h) != string(sha256Sum(long)) {
		t.Fatalf("SHA: %x %v", h, err)
	}
	blockIn := make([]byte, 32)
	rand.Read(blockIn)
	enc, err := d.AES(5, 1, 0, blockIn)
	ref, _ := aes.NewCipher(aesKey[16:32])
	want16 := make([]byte, 16)
	ref.Encrypt(want16, blockIn[:16])
	if err != nil || string(enc[:16]) != string(want16) {
		t.Fatalf("AES: %x %v", enc, err)
	}
	if dec, err := d.AES(5, 1, 1, enc); err != nil || string(dec) != string(blockIn) {
		t.Fatalf("AES decrypt: %v", err)
	}
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
