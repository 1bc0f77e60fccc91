package devtls

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/spf13/afero"
)

// caOverhead is what mbedTLS spends per parsed certificate besides its DER
// (the mbedtls_x509_crt structure and its parsed fields).
const caOverhead = 1536

// CACost is the RAM a parsed certificate of der bytes takes.
func CACost(der []byte) int { return len(der) + caOverhead }

// BundleCost is the RAM that parsing every certificate of caFile would take
// (what a firmware without CA-on-demand spends).
func BundleCost(fsys afero.Fs, caFile string) (int, error) {
	certs, err := readCerts(fsys, caFile)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range certs {
		n += CACost(c.Raw)
	}
	return n, nil
}

// onDemandVerifier verifies a server chain against caFile the way Mongoose
// OS's CA-on-demand does: scan the bundle and parse only the certificates
// whose subject is the issuer the chain names, charging their RAM to ram
// for the duration of the verification.
func onDemandVerifier(fsys afero.Fs, caFile, serverName string, ram *RAM) func([][]byte) ([]*x509.Certificate, error) {
	return func(raw [][]byte) ([]*x509.Certificate, error) {
		if len(raw) == 0 {
			return nil, errors.New("server sent no certificate")
		}
		chain := make([]*x509.Certificate, len(raw))
		for i, b := range raw {
			c, err := x509.ParseCertificate(b)
			if err != nil {
				return nil, err
			}
			chain[i] = c
		}
		bundle, err := afero.ReadFile(fsys, caFile)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", caFile, err)
		}
		issuer := chain[len(chain)-1].RawIssuer
		roots := x509.NewCertPool()
		cost := 0
		for rest := bundle; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			// Cheap check first: only certificates whose subject is the
			// wanted issuer are parsed and kept.
			if blk.Type != "CERTIFICATE" || !bytes.Contains(blk.Bytes, issuer) {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil || !bytes.Equal(c.RawSubject, issuer) {
				continue
			}
			roots.AddCert(c)
			cost += CACost(c.Raw)
		}
		if ram != nil && cost > 0 {
			if !ram.Alloc(cost) {
				return nil, fmt.Errorf("not enough memory for CA certificates (%d bytes)", cost)
			}
			defer ram.Release(cost)
		}
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		chains, err := chain[0].Verify(x509.VerifyOptions{DNSName: serverName, Roots: roots, Intermediates: inter})
		if err != nil {
			return nil, err
		}
		return chains[0], nil
	}
}
