package tls12

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"fmt"
	"hash"
	"math/big"
)

func ecdhCurve(c CurveID) ecdh.Curve {
	switch c {
	case P256:
		return ecdh.P256()
	case P384:
		return ecdh.P384()
	case P521:
		return ecdh.P521()
	}
	return nil
}

func curveOf(pub *ecdsa.PublicKey) CurveID {
	switch pub.Curve {
	case elliptic.P256():
		return P256
	case elliptic.P384():
		return P384
	case elliptic.P521():
		return P521
	}
	return 0
}

// softKey is an ECDH key computed by mbedTLS in software.
type softKey struct{ k *ecdh.PrivateKey }

func (s softKey) Public() []byte { return s.k.PublicKey().Bytes() }

func (s softKey) Shared(peer []byte) ([]byte, error) {
	p, err := s.k.Curve().NewPublicKey(peer)
	if err != nil {
		return nil, err
	}
	return s.k.ECDH(p)
}

// newECDHKey is mbedTLS's ecdh_gen_public with the chip offload: P-256 on
// the chip when there is one, software otherwise.
func (c *Conn) newECDHKey(curve CurveID) (ECDHKey, error) {
	if c.cfg.Chip != nil && curve == P256 {
		if k, err := c.cfg.Chip.GenerateECDH(c.cfg.rand()); err == nil {
			c.ecKey = k
			return k, nil
		}
	}
	c.logSoftwareECDH(curve)
	ec := ecdhCurve(curve)
	if ec == nil {
		return nil, alertf(alertHandshakeFailure, "curve %d", curve)
	}
	k, err := ec.GenerateKey(c.cfg.rand())
	if err != nil {
		return nil, alertf(alertInternalError, "%v", err)
	}
	return softKey{k}, nil
}

// logSoftwareECDH prints ecdh.c's line for an ECDH done in software by a
// firmware that has the chip offload compiled in.
func (c *Conn) logSoftwareECDH(curve CurveID) {
	if c.cfg.Chip != nil || c.cfg.ATCABuilt {
		c.cfg.log(fmt.Sprintf("SW ECDH curve %d", curve.mbedtlsID()), "ecdh.c:133")
	}
}

// staticECDH is the premaster secret of the static ECDH suites: the
// server's certificate key with the client's point.
func (c *Conn) staticECDH(key crypto.PrivateKey, peer []byte) ([]byte, error) {
	if ck, ok := key.(ChipKey); ok && ck.ChipSlot() >= 0 && c.cfg.Chip != nil {
		// mbedtls_ecdh_get_params_pk: "ctx->atca_slot = 0; // TODO": the
		// chip computes with slot 0 whatever N of ATCA:N is.
		return c.cfg.Chip.SlotECDH(0, peer)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, alertf(alertHandshakeFailure, "static ECDH needs an EC key")
	}
	c.logSoftwareECDH(curveOf(&ek.PublicKey))
	k, err := ek.ECDH()
	if err != nil {
		return nil, alertf(alertInternalError, "%v", err)
	}
	p, err := k.Curve().NewPublicKey(peer)
	if err != nil {
		return nil, alertf(alertIllegalParameter, "bad client point")
	}
	return k.ECDH(p)
}

// hashFor returns the hash of a TLS hash id.
func hashFor(id uint8) (crypto.Hash, func() hash.Hash) {
	switch id {
	case hashSHA1:
		return crypto.SHA1, sha1.New
	case hashSHA224:
		return crypto.SHA224, sha256.New224
	case hashSHA256:
		return crypto.SHA256, sha256.New
	case hashSHA384:
		return crypto.SHA384, sha512.New384
	case hashSHA512:
		return crypto.SHA512, sha512.New
	}
	return 0, nil
}

func digest(id uint8, parts ...[]byte) []byte {
	_, h := hashFor(id)
	m := h()
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// verifySig checks a handshake signature (ServerKeyExchange or
// CertificateVerify) with the peer's key; P-256 ECDSA of a SHA-256 digest
// goes through the chip when there is one, as ecdsa_atca_verify does.
func (c *Conn) verifySig(pub crypto.PublicKey, hashID, sigID uint8, dgst, sig []byte) error {
	h, _ := hashFor(hashID)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if sigID != sigECDSA {
			return alertf(alertIllegalParameter, "signature algorithm %d for an EC key", sigID)
		}
		if c.cfg.Chip != nil && curveOf(k) == P256 && len(dgst) == 32 {
			var rs struct{ R, S *big.Int }
			if rest, err := asn1.Unmarshal(sig, &rs); err != nil || len(rest) != 0 || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
				return alertf(alertDecryptError, "bad ECDSA signature encoding")
			}
			raw := append(rs.R.FillBytes(make([]byte, 32)), rs.S.FillBytes(make([]byte, 32))...)
			ok, err := c.cfg.Chip.VerifyECDSA(k, dgst, raw)
			if err == nil {
				if !ok {
					return alertf(alertDecryptError, "signature not verified")
				}
				return nil
			}
		}
		if !ecdsa.VerifyASN1(k, dgst, sig) {
			return alertf(alertDecryptError, "ECDSA signature not verified")
		}
	case *rsa.PublicKey:
		if sigID != sigRSA {
			return alertf(alertIllegalParameter, "signature algorithm %d for an RSA key", sigID)
		}
		if err := rsa.VerifyPKCS1v15(k, h, dgst, sig); err != nil {
			return alertf(alertDecryptError, "RSA signature not verified")
		}
	default:
		return alertf(alertUnsupportedCert, "peer key %T", pub)
	}
	return nil
}

const (
	alertUnsupportedCert      = 43
	alertUnsupportedExtension = 110
)
