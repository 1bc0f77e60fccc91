// Package devtls is TLS on the device as Mongoose OS does it with mbedTLS:
// server configs from http.ssl_* files on the device filesystem (PEM or
// DER, RSA or EC keys, optional client-certificate verification), and a
// model of the RAM every connection costs, so that a handful of idle TLS
// connections exhausts the heap of a real board.
package devtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/mosemu/mosemu/tls/tls12"
	"github.com/spf13/afero"
)

// SignerFunc returns the signer for an `ATCA:N` key (slot N of the crypto
// chip), or an error when there is no chip.
type SignerFunc func(slot int) (crypto.Signer, error)

// Options are the firmware facts a TLS config depends on.
type Options struct {
	ATCA      SignerFunc                   // resolves ATCA:N keys; nil without a chip
	Chip      tls12.Chip                   // the chip's ECDH/ECDSA offload; nil without one
	ATCABuilt bool                         // the firmware has the ATCA offload (sys.atca.enable)
	ESP8266   bool                         // the ESP8266 cipher list of the port
	Log       *slog.Logger                 // mbedTLS's stderr lines
	RAM       *RAM                         // charged for CA certificates loaded on demand
	Protect   func(where string, f func()) // the device's supervisor
}

func (o Options) config() *tls12.Config {
	c := &tls12.Config{Chip: o.Chip, ATCABuilt: o.ATCABuilt, Log: o.Log, Protect: o.Protect}
	if o.ESP8266 {
		c.Suites = tls12.PortSuitesESP8266
	}
	return c
}

// ServerConfig builds the TLS config of the device's HTTP server.
// caFile, when set, turns on mutual TLS: clients must present a
// certificate issued by one of its CAs. As with the port's CA chain kept
// on disk (MBEDTLS_X509_CA_CHAIN_ON_DISK), the CertificateRequest names no
// CA.
func ServerConfig(fsys afero.Fs, certFile, keyFile, caFile string, o Options) (*tls12.Config, error) {
	cert, err := keyPair(fsys, certFile, keyFile, o.ATCA)
	if err != nil {
		return nil, err
	}
	cfg := o.config()
	cfg.Certificate = &cert
	if caFile != "" {
		if cfg.ClientCAs, err = certPool(fsys, caFile); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// keyPair loads a certificate chain and its private key (or ATCA:N).
func keyPair(fsys afero.Fs, certFile, keyFile string, atca SignerFunc) (tls.Certificate, error) {
	certs, err := readCerts(fsys, certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := readKey(fsys, keyFile, atca)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !samePublicKey(certs[0].PublicKey, key.Public()) {
		return tls.Certificate{}, fmt.Errorf("%s and %s do not match", certFile, keyFile)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

// certPool loads the CA certificates of a file.
func certPool(fsys afero.Fs, caFile string) (*x509.CertPool, error) {
	cas, err := readCerts(fsys, caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	return pool, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// readCerts reads one or more certificates, PEM or DER.
func readCerts(fsys afero.Fs, name string) ([]*x509.Certificate, error) {
	b, err := afero.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", name, err)
	}
	var out []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			out = append(out, c)
		}
	}
	if len(out) == 0 { // DER
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("%s: no certificate (PEM or DER): %w", name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// readKey reads a private key (PEM or DER; PKCS#1, PKCS#8, SEC 1) or
// resolves `ATCA:N`.
func readKey(fsys afero.Fs, name string, atca SignerFunc) (crypto.Signer, error) {
	if slot, ok := strings.CutPrefix(name, "ATCA:"); ok {
		n, err := strconv.Atoi(slot)
		if err != nil || n < 0 || n > 15 {
			return nil, fmt.Errorf("bad ATCA key name %q", name)
		}
		if atca == nil {
			return nil, errors.New("ATCA key requested but no crypto chip is configured")
		}
		return atca(n)
	}
	b, err := afero.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", name, err)
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		der = blk.Bytes
	}
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%s: not an RSA or EC private key", name)
}

var _ = []any{(*ecdsa.PrivateKey)(nil), (*rsa.PrivateKey)(nil)}

// ClientConfig builds the TLS config of an outgoing connection (MQTT, OTA)
// from *.ssl_* files: the server is verified against caFile when set (and
// only the certificates of caFile are trusted), certFile/keyFile are
// presented for mutual TLS (AWS IoT and similar brokers require it).
//
// CA certificates are loaded on demand: only the issuer the server's chain
// names is parsed from caFile, and its RAM is charged to o.RAM (may be nil)
// while the handshake verifies it.
func ClientConfig(fsys afero.Fs, certFile, keyFile, caFile, serverName string, o Options) (*tls12.Config, error) {
	cfg := o.config()
	cfg.ServerName = serverName
	if caFile != "" { // without ssl_ca_cert the firmware does not verify the server
		if _, err := fsys.Stat(caFile); err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", caFile, err)
		}
		cfg.VerifyPeerCertificate = onDemandVerifier(fsys, caFile, serverName, o.RAM)
	}
	if certFile != "" {
		c, err := keyPair(fsys, certFile, keyFile, o.ATCA)
		if err != nil {
			return nil, err
		}
		cfg.Certificate = &c
	}
	return cfg, nil
}

// NewListener runs cfg's TLS server on every connection l accepts.
func NewListener(l net.Listener, cfg *tls12.Config) net.Listener { return &tlsListener{l, cfg} }

type tlsListener struct {
	net.Listener
	cfg *tls12.Config
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls12.Server(c, l.cfg), nil
}

// serve runs one server handshake over c (benchmarks).
func (l *tlsListener) serve(c net.Conn) error { return tls12.Server(c, l.cfg).Handshake() }

// Dialer returns the function that runs cfg's TLS client handshake over a
// connection, for the MQTT client.
func Dialer(cfg *tls12.Config) func(net.Conn) (net.Conn, error) {
	return func(c net.Conn) (net.Conn, error) {
		tc := tls12.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		return tc, nil
	}
}
