package host

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/mosemu/mosemu/atca"
	"github.com/mosemu/mosemu/emu/i2c"
	devtls "github.com/mosemu/mosemu/tls"
	"github.com/spf13/afero"
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

func handshakeBench(b *testing.B, signer bool) {
	d, k := provisioned(b)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dev"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	kder, _ := x509.MarshalECPrivateKey(k)
	fs := afero.NewMemMapFs()
	afero.WriteFile(fs, "cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	afero.WriteFile(fs, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644)
	keyName := "key.pem"
	if signer {
		keyName = "ATCA:0"
	}
	cfg, err := devtls.ServerConfig(fs, "cert.pem", keyName, "", func(slot int) (crypto.Signer, error) {
		return NewSigner(d, slot, slog.New(slog.DiscardHandler))
	})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c1, c2 := net.Pipe()
		go tls.Server(c1, cfg).Handshake()
		if err := tls.Client(c2, &tls.Config{InsecureSkipVerify: true}).Handshake(); err != nil {
			b.Fatal(err)
		}
		c1.Close()
		c2.Close()
	}
}

// BenchmarkHandshakeSoftwareKey is a TLS handshake signed with a key file.
func BenchmarkHandshakeSoftwareKey(b *testing.B) { handshakeBench(b, false) }

// BenchmarkHandshakeATCAKey is the same handshake signed by the chip (ATCA:0).
func BenchmarkHandshakeATCAKey(b *testing.B) { handshakeBench(b, true) }
