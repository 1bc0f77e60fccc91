package tls12

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Config configures a client or server. Zero values are mbedTLS's as the
// Mongoose OS port sets them.
type Config struct {
	Rand   io.Reader        // crypto/rand when nil
	Time   func() time.Time // time.Now when nil (ServerHello/ClientHello gmt_unix_time)
	Suites []uint16         // PortSuites when nil
	Curves []CurveID        // Curves when nil

	// Certificate is this side's chain and key. For a server it is
	// required; for a client it is sent when the server asks for one.
	Certificate *tls.Certificate

	// ClientCAs, on a server, turns on client authentication: a client
	// certificate issued by one of them is required (authmode REQUIRED),
	// and their subjects are listed in the CertificateRequest.
	ClientCAs   *x509.CertPool
	ClientCAsDN [][]byte

	// ServerName is the client's SNI. RootCAs or VerifyPeerCertificate,
	// when set, verify the server's chain; without both the client does not
	// verify the server (Mongoose OS without ssl_ca_cert).
	// VerifyPeerCertificate returns the verified chain, leaf to root.
	ServerName            string
	RootCAs               *x509.CertPool
	VerifyPeerCertificate func(rawCerts [][]byte) ([]*x509.Certificate, error)

	// Chip, when set, is the crypto chip mbedTLS offloads P-256 ECDH and
	// ECDSA verification to (MBEDTLS_ECP_ATCA with the chip available);
	// it also restricts the ClientHello to secp256r1 and SHA-256 ECDSA,
	// as the port does. ATCABuilt logs "SW ECDH curve N" when an ECDH is
	// done in software (the offload is compiled in but was not used).
	Chip      Chip
	ATCABuilt bool

	// Log receives the lines mbedTLS prints (fprintf to stderr); nil
	// discards them.
	Log *slog.Logger

	// NoEncryptThenMAC turns the encrypt-then-MAC extension off
	// (mbedtls_ssl_conf_encrypt_then_mac DISABLED). The firmware leaves it
	// on; see halfConn for what that does to CBC suites.
	NoEncryptThenMAC bool

	// Protect, when set, runs every handshake (which calls the chip and
	// the certificate callbacks) under the device's supervisor.
	Protect func(where string, f func())
}

func (c *Config) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

func (c *Config) now() time.Time {
	if c.Time != nil {
		return c.Time()
	}
	return time.Now()
}

func (c *Config) suites() []uint16 {
	if c.Suites != nil {
		return c.Suites
	}
	return PortSuites
}

func (c *Config) curves() []CurveID {
	if c.Curves != nil {
		return c.Curves
	}
	return Curves
}

func (c *Config) log(msg, src string) {
	if c.Log != nil {
		c.Log.Info(msg, "src", src)
	}
}

// ECDHKey is an ephemeral (or slot) key held by the chip.
type ECDHKey interface {
	// Public is the uncompressed point 0x04 || X || Y.
	Public() []byte
	// Shared computes the premaster secret (the X coordinate) with a
	// peer's uncompressed point, and releases the key.
	Shared(peer []byte) ([]byte, error)
}

// Chip is the crypto chip under mbedTLS.
type Chip interface {
	// GenerateECDH makes a P-256 key on the chip (TempKey, or an ECDH
	// slot picked with rnd when TempKey is busy), logging as ecp_atca.c.
	GenerateECDH(rnd io.Reader) (ECDHKey, error)
	// SlotECDH computes ECDH with the private key of a slot (static ECDH
	// suites with an ATCA:N certificate key).
	SlotECDH(slot int, peer []byte) ([]byte, error)
	// VerifyECDSA checks a P-256 signature (R||S) of a SHA-256 digest;
	// errors mean the chip could not (mbedTLS then verifies in software).
	VerifyECDSA(pub *ecdsa.PublicKey, digest, rs []byte) (bool, error)
}

// ChipKey is implemented by private keys that live in a chip slot (ATCA:N).
type ChipKey interface{ ChipSlot() int }

// ConnectionState describes a finished handshake.
type ConnectionState struct {
	CipherSuite      uint16
	Curve            CurveID // ECDHE/ECDH curve, 0 otherwise
	PeerCertificates []*x509.Certificate
	ServerName       string
	SessionID        []byte
	ExtendedMaster   bool
	EncryptThenMAC   bool
}

// Conn is a TLS 1.2 connection; it implements net.Conn.
type Conn struct {
	conn     net.Conn
	cfg      *Config
	isClient bool

	hsMu   sync.Mutex
	hsDone bool
	hsErr  error
	state  ConnectionState

	inMu    sync.Mutex
	in      halfConn
	rawIn   []byte // bytes read from conn not yet consumed
	hsIn    []byte // handshake bytes not yet consumed
	appIn   []byte
	readErr error

	outMu     sync.Mutex
	out       halfConn
	maxOut    int
	writeErr  error
	closeOnce sync.Once

	transcript bytes.Buffer
	ecKey      ECDHKey // the handshake's ECDH key, released when it ends
	phase      uint8   // the handshake message (or recordCCS) being read, for mbedTLS's error code
}

// Server returns a server-side connection over c; the handshake runs on
// the first Read or Write, or on Handshake.
func Server(c net.Conn, cfg *Config) *Conn { return &Conn{conn: c, cfg: cfg, maxOut: maxPlaintext} }

// Client returns a client-side connection over c.
func Client(c net.Conn, cfg *Config) *Conn {
	return &Conn{conn: c, cfg: cfg, isClient: true, maxOut: maxPlaintext}
}

// Handshake runs the handshake if it has not run yet.
func (c *Conn) Handshake() error {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.hsDone {
		return c.hsErr
	}
	c.hsDone = true
	run := func() {
		if c.isClient {
			c.hsErr = c.clientHandshake()
		} else {
			c.hsErr = c.serverHandshake()
		}
	}
	if c.cfg.Protect != nil {
		c.hsErr = errors.New("tls12: the handshake crashed")
		c.cfg.Protect("TLS handshake", run)
	} else {
		run()
	}
	if r, ok := c.ecKey.(interface{ Release() }); ok {
		r.Release() // a chip's TempKey, when the handshake failed before using it
	}
	c.ecKey = nil
	if c.hsErr != nil {
		c.logError(c.hsErr)
		var a *AlertError
		if errors.As(c.hsErr, &a) && !a.Received {
			c.sendAlert(a.Desc)
		}
		c.conn.Close()
	}
	c.transcript = bytes.Buffer{}
	return c.hsErr
}

// ConnectionState returns the handshake's result.
func (c *Conn) ConnectionState() ConnectionState {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	return c.state
}

// readRecord reads one record and removes its protection.
func (c *Conn) readRecord() (uint8, []byte, error) {
	if c.readErr != nil {
		return 0, nil, c.readErr
	}
	fail := func(err error) (uint8, []byte, error) {
		c.readErr = err
		return 0, nil, err
	}
	if err := c.fill(5); err != nil {
		return 0, nil, c.ioError(err)
	}
	typ, ver, n := c.rawIn[0], int(c.rawIn[1])<<8|int(c.rawIn[2]), int(c.rawIn[3])<<8|int(c.rawIn[4])
	if typ < recordCCS || typ > recordAppData {
		return fail(alertf(alertUnexpectedMessage, "unknown record type %d", typ))
	}
	if ver>>8 != 3 {
		return fail(alertf(alertProtocolVersion, "record version %#04x", ver))
	}
	if n > maxCiphertext || (!c.in.active() && n > maxPlaintext) {
		return fail(alertf(alertRecordOverflow, "record of %d bytes", n))
	}
	if err := c.fill(5 + n); err != nil {
		return 0, nil, c.ioError(err)
	}
	body := c.rawIn[5 : 5+n]
	c.rawIn = c.rawIn[5+n:]
	p, err := c.in.open(typ, body)
	if err != nil {
		return fail(alertf(alertBadRecordMAC, "%v", err))
	}
	if len(p) > maxPlaintext {
		return fail(alertf(alertRecordOverflow, "plaintext of %d bytes", len(p)))
	}
	return typ, p, nil
}

// ioError records a read error: a deadline is not fatal (net/http sets
// one in the past to stop its background read before a WebSocket
// hijack); bytes read so far stay buffered for the next call.
func (c *Conn) ioError(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	c.readErr = err
	return err
}

// fill reads from the connection until n raw bytes are buffered.
func (c *Conn) fill(n int) error {
	for len(c.rawIn) < n {
		buf := make([]byte, max(n-len(c.rawIn), 4096))
		k, err := c.conn.Read(buf)
		c.rawIn = append(c.rawIn, buf[:k]...)
		if err != nil && len(c.rawIn) < n {
			if err == io.EOF && len(c.rawIn) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// readHandshake returns the next handshake message (header included) and
// adds it to the transcript. want, when not 0, is the only type accepted.
func (c *Conn) readHandshake(want uint8) ([]byte, error) {
	c.phase = want
	for {
		if len(c.hsIn) >= 4 {
			n := int(c.hsIn[1])<<16 | int(c.hsIn[2])<<8 | int(c.hsIn[3])
			if n > 65536 {
				return nil, alertf(alertDecodeError, "handshake message of %d bytes", n)
			}
			if len(c.hsIn) >= 4+n {
				msg := append([]byte{}, c.hsIn[:4+n]...)
				c.hsIn = c.hsIn[4+n:]
				c.phase = msg[0]
				if want != 0 && msg[0] != want {
					return nil, alertf(alertUnexpectedMessage, "handshake message %d, want %d", msg[0], want)
				}
				c.transcript.Write(msg)
				return msg, nil
			}
		}
		typ, p, err := c.readRecord()
		if err != nil {
			return nil, err
		}
		switch typ {
		case recordHandshake:
			if len(p) == 0 {
				return nil, alertf(alertUnexpectedMessage, "empty handshake record")
			}
			c.hsIn = append(c.hsIn, p...)
		case recordAlert:
			return nil, c.alertReceived(p)
		default:
			return nil, alertf(alertUnexpectedMessage, "record type %d during the handshake", typ)
		}
	}
}

// readCCS reads a ChangeCipherSpec record.
func (c *Conn) readCCS() error {
	c.phase = recordCCS
	if len(c.hsIn) != 0 {
		return alertf(alertUnexpectedMessage, "handshake data before ChangeCipherSpec")
	}
	typ, p, err := c.readRecord()
	if err != nil {
		return err
	}
	switch {
	case typ == recordAlert:
		return c.alertReceived(p)
	case typ != recordCCS:
		return alertf(alertUnexpectedMessage, "record type %d, want ChangeCipherSpec", typ)
	case len(p) != 1 || p[0] != 1:
		return alertf(alertDecodeError, "bad ChangeCipherSpec")
	}
	return nil
}

func (c *Conn) alertReceived(p []byte) error {
	if len(p) != 2 {
		return alertf(alertDecodeError, "bad alert")
	}
	if p[1] == alertCloseNotify {
		return io.EOF
	}
	return &AlertError{Desc: p[1], Received: true}
}

// writeRecord protects and sends data as records of one type.
func (c *Conn) writeRecord(typ uint8, data []byte) error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.writeRecordLocked(typ, data)
}

func (c *Conn) writeRecordLocked(typ uint8, data []byte) error {
	if c.writeErr != nil {
		return c.writeErr
	}
	for first := true; first || len(data) > 0; first = false {
		n := min(len(data), c.maxOut)
		body, err := c.out.seal(typ, data[:n], c.cfg.rand())
		if err != nil {
			c.writeErr = err
			return err
		}
		rec := append([]byte{typ, 3, 3, byte(len(body) >> 8), byte(len(body))}, body...)
		if _, err := c.conn.Write(rec); err != nil {
			c.writeErr = err
			return err
		}
		data = data[n:]
	}
	return nil
}

// writeHandshake sends one handshake message in its own record (as
// mbedTLS does) and adds it to the transcript.
func (c *Conn) writeHandshake(msg []byte) error {
	c.transcript.Write(msg)
	return c.writeRecord(recordHandshake, msg)
}

func (c *Conn) sendAlert(desc uint8) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.writeErr != nil {
		return
	}
	level := byte(2)
	if desc == alertCloseNotify || desc == alertNoRenegotiation {
		level = 1
	}
	if desc != alertNoRenegotiation { // the connection ends: do not wait long for the peer
		c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	}
	c.writeRecordLocked(recordAlert, []byte{level, desc})
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	for len(c.appIn) == 0 {
		typ, data, err := c.readRecord()
		if err != nil {
			var a *AlertError
			if errors.As(err, &a) && !a.Received {
				c.sendAlert(a.Desc)
			}
			c.logError(err)
			return 0, err
		}
		switch typ {
		case recordAppData:
			c.appIn = data
		case recordAlert:
			err := c.alertReceived(data)
			c.readErr = err
			c.logError(err)
			return 0, err
		case recordHandshake: // renegotiation is not compiled in: refuse it
			renegotiate := uint8(hsClientHello)
			if c.isClient {
				renegotiate = hsHelloRequest
			}
			if len(data) > 0 && data[0] == renegotiate {
				c.sendAlert(alertNoRenegotiation)
				continue
			}
			c.readErr = alertf(alertUnexpectedMessage, "handshake message after the handshake")
			c.sendAlert(alertUnexpectedMessage)
			return 0, c.readErr
		default:
			c.readErr = alertf(alertUnexpectedMessage, "record type %d", typ)
			c.sendAlert(alertUnexpectedMessage)
			return 0, c.readErr
		}
	}
	n := copy(p, c.appIn)
	c.appIn = c.appIn[n:]
	return n, nil
}

// Write implements net.Conn.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if err := c.writeRecord(recordAppData, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends close_notify (after a completed handshake) and closes.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.hsMu.TryLock() {
			if c.hsDone && c.hsErr == nil {
				c.sendAlert(alertCloseNotify)
			}
			c.hsMu.Unlock()
		}
		err = c.conn.Close()
	})
	return err
}

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.conn }

// sendFinished sends ChangeCipherSpec, protects what follows with the new
// keys and sends Finished (label: "client finished" or "server finished").
func (c *Conn) sendFinished(st *suite, master, key, mac, iv []byte, etm bool, label string) error {
	if err := c.writeRecord(recordCCS, []byte{1}); err != nil {
		return err
	}
	c.outMu.Lock()
	c.out.setKeys(st, key, mac, iv, etm)
	c.outMu.Unlock()
	fin := finished(master, label, c.transcript.Bytes())
	return c.writeHandshake(handshakeMsg(hsFinished, func(b *cryptobyte.Builder) { b.AddBytes(fin) }))
}

// readFinished reads the peer's ChangeCipherSpec, opens what follows with
// the new keys and checks its Finished.
func (c *Conn) readFinished(st *suite, master, key, mac, iv []byte, etm bool, label string) error {
	if err := c.readCCS(); err != nil {
		return err
	}
	c.in.setKeys(st, key, mac, iv, etm)
	want := finished(master, label, c.transcript.Bytes())
	m, err := c.readHandshake(hsFinished)
	if err != nil {
		return err
	}
	if len(m) != 16 || subtle.ConstantTimeCompare(m[4:], want) != 1 {
		return alertf(alertDecodeError, "bad %s", label)
	}
	return nil
}
