package ota

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// KeySlots is the number of update.keyN slots.
const KeySlots = 8

// CheckSignatures verifies the manifest's signatures against the
// configured keys (update.key0..7: base64 DER ECDSA P-256 public keys) and
// returns the bitmask of valid ones: bit N for sigN verified with keyN.
func CheckSignatures(m *Manifest, keys [KeySlots]string) uint8 {
	digest := sha256.Sum256(m.Raw)
	var res uint8
	for i, k := range keys {
		if k == "" {
			continue
		}
		der, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(der)
		ek, ok := pub.(*ecdsa.PublicKey)
		if err != nil || !ok || ek.Curve != elliptic.P256() {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(m.Sigs[fmt.Sprintf("sig%d", i)])
		if err != nil || len(sig) == 0 {
			continue
		}
		if ecdsa.VerifyASN1(ek, digest[:], sig) {
			res |= 1 << i
		}
	}
	return res
}

// SignatureAccepted applies update.sig_req_mask: below 0 signatures are
// not required; 0 refuses every update (a tombstone); otherwise every
// masked signature must be valid.
func SignatureAccepted(result uint8, mask int) bool {
	switch {
	case mask < 0:
		return true
	case mask == 0:
		return false
	}
	return int(result)&mask == mask
}

// signatureExtra builds the manifest entry's extra field with sigN of the
// manifest signed by keys[N] (nil entries are skipped), as mos
// create-fw-bundle --sign-key does.
func signatureExtra(manifest []byte, keys []*ecdsa.PrivateKey) ([]byte, error) {
	attrs := map[string]string{}
	digest := sha256.Sum256(manifest)
	for i, k := range keys {
		if k == nil {
			continue
		}
		sig, err := ecdsa.SignASN1(rand.Reader, k, digest[:])
		if err != nil {
			return nil, err
		}
		attrs[fmt.Sprintf("sig%d", i)] = base64.StdEncoding.EncodeToString(sig)
	}
	if len(attrs) == 0 {
		return nil, nil
	}
	data, err := json.Marshal(attrs)
	if err != nil {
		return nil, err
	}
	b := binary.LittleEndian.AppendUint16(nil, sigExtraID)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...), nil
}
