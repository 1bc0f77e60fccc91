package devtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/spf13/afero"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, name string) testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	c, _ := x509.ParseCertificate(der)
	return testCA{c, key}
}

func (ca testCA) serve(t *testing.T) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"}, DNSNames: []string{"broker.local"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return l.Addr().String()
}

// TestCAOnDemand: with a 40-certificate ca.pem, verifying a server costs
// the RAM of the one issuer it needs, not of the bundle.
func TestCAOnDemand(t *testing.T) {
	right := newCA(t, "Right CA")
	var bundle []byte
	for i := 0; i < 40; i++ {
		c := newCA(t, "Unrelated CA").cert
		if i == 20 {
			c = right.cert
		}
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	fs := afero.NewMemMapFs()
	afero.WriteFile(fs, "ca.pem", bundle, 0o644)
	all, _ := BundleCost(fs, "ca.pem")
	ram := NewRAM(294_000, 200_000)
	cfg, err := ClientConfig(fs, "", "", "ca.pem", "broker.local", Options{RAM: ram})
	if err != nil {
		t.Fatal(err)
	}
	dial := func(addr string) (net.Conn, error) {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		return Dialer(cfg)(raw)
	}
	c, err := dial(right.serve(t))
	if err != nil {
		t.Fatalf("handshake with a server of a CA in the bundle: %v", err)
	}
	c.Close()
	_, free, minFree := ram.Stats()
	used := free - minFree
	if free != 200_000 || used != CACost(right.cert.Raw) || used*10 > all {
		t.Fatalf("CA RAM on demand %d bytes (bundle would take %d), free after %d", used, all, free)
	}
	t.Logf("CA on demand: %d bytes of RAM; loading the whole bundle: %d bytes", used, all)
	if _, err := dial(newCA(t, "Stranger CA").serve(t)); err == nil {
		t.Fatal("server of an unknown CA accepted")
	}
	v := onDemandVerifier(fs, "ca.pem", "other.name", nil)
	if _, err := tls.Dial("tcp", right.serve(t), &tls.Config{ServerName: "other.name", InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error { _, err := v(raw); return err }}); err == nil {
		t.Fatal("server name mismatch accepted")
	}
}
