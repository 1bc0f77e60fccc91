package tls12

import (
	"crypto/hmac"
	"crypto/sha256"
)

// prf is the TLS 1.2 PRF with SHA-256 (every suite of the port uses it).
func prf(secret []byte, label string, seed []byte, n int) []byte {
	ls := append([]byte(label), seed...)
	out := make([]byte, 0, n+32)
	mac := func(parts ...[]byte) []byte {
		h := hmac.New(sha256.New, secret)
		for _, p := range parts {
			h.Write(p)
		}
		return h.Sum(nil)
	}
	a := mac(ls)
	for len(out) < n {
		out = append(out, mac(a, ls)...)
		a = mac(a)
	}
	return out[:n]
}

// masterSecret derives the master secret; with the extended master secret
// extension the seed is the hash of the handshake so far (RFC 7627).
func masterSecret(pms, clientRandom, serverRandom, sessionHash []byte, ems bool) []byte {
	if ems {
		return prf(pms, "extended master secret", sessionHash, 48)
	}
	return prf(pms, "master secret", append(append([]byte{}, clientRandom...), serverRandom...), 48)
}

// keys expands the master secret into both directions' keys.
func keys(s *suite, master, clientRandom, serverRandom []byte) (cKey, sKey, cMAC, sMAC, cIV, sIV []byte) {
	macLen, ivLen := s.macLen, 0
	if s.gcm {
		ivLen = 4
	}
	n := 2*macLen + 2*16 + 2*ivLen
	kb := prf(master, "key expansion", append(append([]byte{}, serverRandom...), clientRandom...), n)
	cMAC, kb = kb[:macLen], kb[macLen:]
	sMAC, kb = kb[:macLen], kb[macLen:]
	cKey, kb = kb[:16], kb[16:]
	sKey, kb = kb[:16], kb[16:]
	cIV, sIV = kb[:ivLen], kb[ivLen:ivLen*2]
	return
}

// finished computes the verify_data of a Finished message.
func finished(master []byte, label string, transcript []byte) []byte {
	h := sha256.Sum256(transcript)
	return prf(master, label, h[:], 12)
}

func sha256Of(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
