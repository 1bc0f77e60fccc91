package devtls

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"

	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/spf13/afero"
)

// newCA makes a self-signed P-256 CA certificate.
func newCA(t *testing.T, name string) *testkit.Cert {
	return testkit.Issue(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
}

// serve runs a TLS server on loopback with a certificate for broker.local
// signed by ca; it handshakes and closes each connection.
func serve(t *testing.T, ca *testkit.Cert) string {
	srv := testkit.Issue(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"}, DNSNames: []string{"broker.local"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, nil, ca)
	cfg := &tls.Config{Certificates: []tls.Certificate{srv.TLS()}}
	l := testkit.Serve(t, func(c net.Conn) {
		go func() {
			tc := tls.Server(c, cfg)
			tc.Handshake()
			tc.Close()
		}()
	})
	return l.Addr().String()
}

// TestCAOnDemand: with a 40-certificate ca.pem, verifying a server costs
// the RAM of the one issuer it needs, not of the bundle.
func TestCAOnDemand(t *testing.T) {
	right := newCA(t, "Right CA")
	var bundle []byte
	for i := 0; i < 40; i++ {
		c := newCA(t, "Unrelated CA").X509
		if i == 20 {
			c = right.X509
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
	c, err := dial(serve(t, right))
	if err != nil {
		t.Fatalf("handshake with a server of a CA in the bundle: %v", err)
	}
	c.Close()
	_, free, minFree := ram.Stats()
	used := free - minFree
	if free != 200_000 || used != CACost(right.X509.Raw) || used*10 > all {
		t.Fatalf("CA RAM on demand %d bytes (bundle would take %d), free after %d", used, all, free)
	}
	t.Logf("CA on demand: %d bytes of RAM; loading the whole bundle: %d bytes", used, all)
	if _, err := dial(serve(t, newCA(t, "Stranger CA"))); err == nil {
		t.Fatal("server of an unknown CA accepted")
	}
	v := onDemandVerifier(fs, "ca.pem", "other.name", nil)
	if _, err := tls.Dial("tcp", serve(t, right), &tls.Config{ServerName: "other.name", InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error { _, err := v(raw); return err }}); err == nil {
		t.Fatal("server name mismatch accepted")
	}
}
