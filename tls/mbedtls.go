package devtls

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/mosemu/mosemu/emu/console"
)

// CipherSuites are the suites of the Mongoose OS mbedTLS port
// (mgos_ssl_if_mbedtls.c, ESP32 list) that Go implements, in the firmware's
// order: the DHE and static ECDH suites of that list have no Go
// implementation and are left out.
var CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
}

// Curves are the curves the port's mbedTLS config enables, in mbedTLS's
// preference order (secp521r1, secp384r1, secp256r1, x25519).
var Curves = []tls.CurveID{tls.CurveP521, tls.CurveP384, tls.CurveP256, tls.X25519}

// mbedTLS 2.x speaks TLS 1.2 only (MBEDTLS_SSL_PROTO_TLS1_2 is the only
// protocol compiled in, and the port sets 1.2 as the minimum).
func mbedTLS(c *tls.Config) *tls.Config {
	c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	c.CipherSuites = CipherSuites
	c.CurvePreferences = Curves
	return c
}

// errInvalidRecord is MBEDTLS_ERR_SSL_INVALID_RECORD.
const errInvalidRecord = -0x7200

// RecordListener drops connections whose first bytes are not a TLS
// handshake record, as the firmware does when mbedTLS fails the handshake
// on them (plain HTTP sent to the HTTPS port gets no answer, not Go's
// "400 Client sent an HTTP request to an HTTPS server").
type RecordListener struct {
	net.Listener
	Log *slog.Logger
}

// Accept implements net.Listener.
func (l *RecordListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordConn{Conn: c, log: l.Log}, nil
}

type recordConn struct {
	net.Conn
	log     *slog.Logger
	once    sync.Once
	dropped bool
	first   []byte
	err     error
}

var errDropped = errors.New("connection dropped: not a TLS handshake")

func (c *recordConn) Read(p []byte) (int, error) {
	c.once.Do(func() {
		b := make([]byte, 1)
		if _, c.err = io.ReadFull(c.Conn, b); c.err != nil {
			return
		}
		if b[0] != 0x16 { // handshake record type
			c.dropped = true
			c.log.Error(fmt.Sprintf("%p mbedTLS error: -0x%04x", c, -errInvalidRecord), console.Src("mgos_ssl_if_mbedtls.c", 291))
			c.Conn.Close()
			return
		}
		c.first = b
	})
	if c.dropped {
		return 0, errDropped
	}
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	if c.err != nil {
		err := c.err
		c.err = nil
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *recordConn) Write(p []byte) (int, error) {
	if c.dropped {
		return 0, errDropped
	}
	return c.Conn.Write(p)
}
