package tls12

import (
	"crypto/tls"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// FuzzServerHandshake feeds untrusted bytes to the server as a client's
// flight: it must fail with an error (no panic, no hang), and anything it
// accepts must have been a ClientHello it parsed.
func FuzzServerHandshake(f *testing.F) {
	for _, fx := range loadFixtures(&testing.T{}, "srv-*.json") {
		f.Add(fx.record(0))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{22, 3, 3, 0, 4, 1, 0, 0, 0})
	dir := filepath.Join("..", "testdata", "mbedtls216")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server-ec.crt.pem"), filepath.Join(dir, "server-ec.key.pem"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c1, c2 := net.Pipe()
		defer c1.Close()
		s := Server(c2, &Config{Certificate: &cert})
		go func() {
			c1.SetDeadline(time.Now().Add(2 * time.Second))
			c1.Write(in)
			c1.Close()
		}()
		go io.Copy(io.Discard, c1)
		c2.SetDeadline(time.Now().Add(2 * time.Second))
		if err := s.Handshake(); err == nil {
			t.Fatal("a handshake completed from one flight")
		}
	})
}

// FuzzParseClientHello: the parser never panics, and what it accepts
// marshals back to a message it accepts again.
func FuzzParseClientHello(f *testing.F) {
	for _, fx := range loadFixtures(&testing.T{}, "*.json") {
		if b := fx.record(0); len(b) > 5 && b[5] == hsClientHello {
			f.Add(b[5:])
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 4 {
			return
		}
		ch, ok := parseClientHello(in)
		if !ok {
			return
		}
		if _, ok := parseClientHello(ch.marshal()); !ok {
			t.Fatalf("re-marshalled ClientHello refused: %x", ch.marshal())
		}
	})
}
