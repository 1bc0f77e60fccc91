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
	"strconv"
	"strings"

	"github.com/spf13/afero"
)

// SignerFunc returns the signer for an `ATCA:N` key (slot N of the crypto
// chip), or an error when there is no chip.
type SignerFunc func(slot int) (crypto.Signer, error)

// ServerConfig builds the TLS config of the device's HTTP server.
// caFile, when set, turns on mutual TLS: clients must present a
// certificate issued by one of its CAs.
func ServerConfig(fsys afero.Fs, certFile, keyFile, caFile string, atca SignerFunc) (*tls.Config, error) {
	cert, err := keyPair(fsys, certFile, keyFile, atca)
	if err != nil {
		return nil, err
	}
	cfg := mbedTLS(&tls.Config{Certificates: []tls.Certificate{cert}})
	if caFile != "" {
		if cfg.ClientCAs, err = certPool(fsys, caFile); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
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

// ClientConfig builds the TLS config of an outgoing connection (MQTT) from
// mqtt.ssl_* files: the server is verified against caFile when set (and
// only the certificates of caFile are trusted), certFile/keyFile are
// presented for mutual TLS (AWS IoT and similar brokers require it).
//
// CA certificates are loaded on demand: only the issuer the server's chain
// names is parsed from caFile, and its RAM is charged to ram (may be nil)
// while the handshake verifies it.
func ClientConfig(fsys afero.Fs, certFile, keyFile, caFile, serverName string, atca SignerFunc, ram *RAM) (*tls.Config, error) {
	// Verification is ours (on demand), so Go's own is skipped.
	cfg := mbedTLS(&tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if caFile != "" { // without ssl_ca_cert the firmware does not verify the server
		if _, err := fsys.Stat(caFile); err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", caFile, err)
		}
		cfg.VerifyPeerCertificate = onDemandVerifier(fsys, caFile, serverName, ram)
	}
	if certFile != "" {
		c, err := keyPair(fsys, certFile, keyFile, atca)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}
