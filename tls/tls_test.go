package devtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/spf13/afero"
)

// selfSigned returns a self-signed certificate for key, in DER.
func selfSigned(t testing.TB, key crypto.Signer) []byte {
	return testkit.Issue(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dev"}}, key, nil).X509.Raw
}

func TestServerConfigFormats(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecDER := selfSigned(t, ec)
	rsDER := selfSigned(t, rs)
	ecKey, _ := x509.MarshalECPrivateKey(ec)
	rsPKCS8, _ := x509.MarshalPKCS8PrivateKey(rs)
	pemOf := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	fs := afero.NewMemMapFs()
	files := map[string][]byte{
		"ec.pem": pemOf("CERTIFICATE", ecDER), "ec.key": pemOf("EC PRIVATE KEY", ecKey),
		"ec.der": ecDER, "ec.key.der": ecKey,
		"rsa.pem": pemOf("CERTIFICATE", rsDER), "rsa.key": pemOf("PRIVATE KEY", rsPKCS8),
		"rsa1.key": pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rs)),
	}
	for n, b := range files {
		afero.WriteFile(fs, n, b, 0o644)
	}
	tests := []struct {
		cert, key, err string
	}{
		{"ec.pem", "ec.key", ""},
		{"ec.der", "ec.key.der", ""},
		{"rsa.pem", "rsa.key", ""},
		{"rsa.pem", "rsa1.key", ""},
		{"ec.pem", "rsa.key", "do not match"},
		{"missing.pem", "ec.key", "failed to read"},
		{"ec.pem", "ATCA:0", "no crypto chip"},
		{"ec.pem", "ATCA:x", "bad ATCA key"},
	}
	for _, tt := range tests {
		_, err := ServerConfig(fs, tt.cert, tt.key, "", Options{})
		if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s/%s: err %v, want %q", tt.cert, tt.key, err, tt.err)
		}
	}
}

func TestRAMListenerRefundsOnClose(t *testing.T) {
	ram := NewRAM(100_000, 60_000)
	tcp, _ := net.Listen("tcp", "127.0.0.1:0")
	l := &Listener{Listener: tcp, RAM: ram, Cost: 20_000, Log: slog.New(slog.DiscardHandler)}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { b := make([]byte, 1); c.Read(b); c.Close() }()
		}
	}()
	var cs []net.Conn
	for i := 0; i < 2; i++ {
		c, _ := net.Dial("tcp", tcp.Addr().String())
		cs = append(cs, c)
	}
	time.Sleep(50 * time.Millisecond)
	if _, free, _ := ram.Stats(); free != 20_000 {
		t.Fatalf("free after 2 connections: %d", free)
	}
	third, _ := net.Dial("tcp", tcp.Addr().String())
	third.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection was not refused")
	}
	for _, c := range cs {
		c.Write([]byte{1})
		c.Close()
	}
	time.Sleep(50 * time.Millisecond)
	if _, free, minFree := ram.Stats(); free != 60_000 || minFree != 20_000 {
		t.Fatalf("after close free %d min %d", free, minFree)
	}
}

// BenchmarkHandshake is a full TLS handshake against a server configured
// from files, with a software ECDSA P-256 key.
func BenchmarkHandshake(b *testing.B) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der := selfSigned(b, ec)
	kder, _ := x509.MarshalECPrivateKey(ec)
	fs := afero.NewMemMapFs()
	afero.WriteFile(fs, "c", der, 0o644)
	afero.WriteFile(fs, "k", kder, 0o644)
	cfg, err := ServerConfig(fs, "c", "k", "", Options{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c1, c2 := net.Pipe()
		go NewListener(nil, cfg).(*tlsListener).serve(c1)
		cl := tls.Client(c2, &tls.Config{InsecureSkipVerify: true})
		if err := cl.Handshake(); err != nil {
			b.Fatal(err)
		}
		c2.Close() // raw close: a TLS close_notify would block on the pipe
		c1.Close()
	}
}

func TestSlowListenerDelaysFirstWrite(t *testing.T) {
	tcp, _ := net.Listen("tcp", "127.0.0.1:0")
	l := &SlowListener{Listener: tcp, Min: 200 * time.Millisecond, Max: 300 * time.Millisecond}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("a"))
			c.Write([]byte("b"))
			c.Close()
		}
	}()
	c, _ := net.Dial("tcp", tcp.Addr().String())
	start := time.Now()
	b := make([]byte, 2)
	n, _ := c.Read(b[:1])
	if d := time.Since(start); n != 1 || d < 200*time.Millisecond {
		t.Fatalf("first byte after %v", d)
	}
}
