package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// Cert is a certificate made by Issue and its private key.
type Cert struct {
	X509 *x509.Certificate
	Key  crypto.Signer
}

// Issue makes a certificate from tmpl for key (a fresh P-256 key when
// nil), signed by parent (self-signed when nil). A zero SerialNumber,
// NotBefore or NotAfter in tmpl is filled in: a serial from the clock and
// a validity from an hour ago to an hour from now.
func Issue(t testing.TB, tmpl *x509.Certificate, key crypto.Signer, parent *Cert) *Cert {
	t.Helper()
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.X509, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{X509: c, Key: key}
}

// TLS returns the certificate and key as a tls.Certificate, its Leaf set.
func (c *Cert) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.X509.Raw}, PrivateKey: c.Key, Leaf: c.X509}
}

// CertPEM returns the certificate PEM-encoded.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.X509.Raw})
}

// KeyPEM returns the private key PEM-encoded: an ECDSA key in SEC 1 form
// ("EC PRIVATE KEY", as mbedTLS and Mongoose OS's tools write it), any
// other key in PKCS #8 form ("PRIVATE KEY").
func (c *Cert) KeyPEM() []byte {
	if k, ok := c.Key.(*ecdsa.PrivateKey); ok {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			panic(err) // only a key on a curve crypto/x509 does not know
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
