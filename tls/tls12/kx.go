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
	"errors"
	"fmt"
	"hash"
	"io"
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
			return k, nil
		}
	}
	if c.cfg.Chip != nil || c.cfg.ATCABuilt {
		c.cfg.log(fmt.Sprintf("SW ECDH curve %d", curve.mbedtlsID()), "ecdh.c:133")
	}
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

// staticECDH is the premaster secret of the static ECDH suites: the
// server's certificate key with the client's point.
func (c *Conn) staticECDH(key crypto.PrivateKey, peer []byte) ([]byte, error) {
	if ck, ok := key.(ChipKey); ok && c.cfg.Chip != nil {
		// mbedtls_ecdh_get_params_pk: "ctx->atca_slot = 0; // TODO": the
		// chip computes with slot 0 whatever N of ATCA:N is.
		_ = ck
		return c.cfg.Chip.SlotECDH(0, peer)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, alertf(alertHandshakeFailure, "static ECDH needs an EC key")
	}
	if c.cfg.Chip != nil || c.cfg.ATCABuilt {
		c.cfg.log(fmt.Sprintf("SW ECDH curve %d", curveOf(&ek.PublicKey).mbedtlsID()), "ecdh.c:133")
	}
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

// RFC 3526 2048-bit MODP group: mbedTLS 2.16's default DHE parameters
// (MBEDTLS_DHM_RFC3526_MODP_2048_P_BIN, g = 2).
var dhP, _ = new(big.Int).SetString("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)

var dhG = big.NewInt(2)

// dhKey is an ephemeral DH key of the 2048-bit group.
type dhKey struct{ x, gx *big.Int }

func newDHKey(p, g *big.Int, rand io.Reader) (*dhKey, error) {
	b := make([]byte, len(p.Bytes()))
	if _, err := io.ReadFull(rand, b); err != nil {
		return nil, err
	}
	x := new(big.Int).SetBytes(b)
	x.Mod(x, new(big.Int).Sub(p, big.NewInt(3)))
	x.Add(x, big.NewInt(2))
	return &dhKey{x: x, gx: new(big.Int).Exp(g, x, p)}, nil
}

// dhShared checks the peer's value (1 < y < p-1) and computes the secret,
// without leading zeros as mbedTLS's mbedtls_dhm_calc_secret writes it.
func dhShared(p, x, y *big.Int) ([]byte, error) {
	if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(new(big.Int).Sub(p, big.NewInt(1))) >= 0 {
		return nil, errors.New("bad DH public value")
	}
	return new(big.Int).Exp(y, x, p).Bytes(), nil
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

const alertUnsupportedCert = 43
