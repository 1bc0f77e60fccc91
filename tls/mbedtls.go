package devtls

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/mosemu/mosemu/emu/console"
)

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
