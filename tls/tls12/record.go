package tls12

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Record content types.
const (
	recordCCS       = 20
	recordAlert     = 21
	recordHandshake = 22
	recordAppData   = 23
)

const (
	maxPlaintext  = 16384
	maxCiphertext = maxPlaintext + 2048
	version12     = 0x0303
)

// Alert descriptions (RFC 5246 7.2).
const (
	alertCloseNotify        = 0
	alertUnexpectedMessage  = 10
	alertBadRecordMAC       = 20
	alertRecordOverflow     = 22
	alertHandshakeFailure   = 40
	alertBadCertificate     = 42
	alertCertificateExpired = 45
	alertIllegalParameter   = 47
	alertUnknownCA          = 48
	alertDecodeError        = 50
	alertDecryptError       = 51
	alertProtocolVersion    = 70
	alertInternalError      = 80
	alertNoRenegotiation    = 100
)

// AlertError is a fatal alert, sent or received.
type AlertError struct {
	Desc     uint8
	Received bool // from the peer
	Reason   string
}

func (e *AlertError) Error() string {
	who := "sent"
	if e.Received {
		who = "received"
	}
	s := fmt.Sprintf("tls12: %s alert %d", who, e.Desc)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

func alertf(desc uint8, format string, a ...any) *AlertError {
	return &AlertError{Desc: desc, Reason: fmt.Sprintf(format, a...)}
}

// halfConn is one direction's record protection.
type halfConn struct {
	seq    uint64
	aead   cipher.AEAD // GCM
	salt   []byte      // GCM implicit nonce part
	block  cipher.Block
	macKey []byte
	mac    func() hash.Hash
	etm    bool // encrypt-then-MAC (RFC 7366)
}

// The fork's ssl_encrypt_buf (ssl_tls.c, encrypt-then-MAC branch) computes
// the MAC into the record and then copies an uninitialised stack buffer
// over it: every record it protects with EtM carries garbage instead of
// its MAC, and the peer answers bad_record_mac. Records sealed here do the
// same (random bytes for the stack's leftovers); opening is correct.

func (h *halfConn) active() bool { return h.aead != nil || h.block != nil }

func (h *halfConn) setKeys(s *suite, key, macKey, iv []byte, etm bool) {
	blk, _ := aes.NewCipher(key)
	*h = halfConn{}
	if s.gcm {
		h.aead, _ = cipher.NewGCM(blk)
		h.salt = iv
		return
	}
	h.block, h.macKey, h.mac, h.etm = blk, macKey, s.mac, etm
}

func (h *halfConn) header(typ uint8, n int) []byte {
	b := make([]byte, 13)
	binary.BigEndian.PutUint64(b, h.seq)
	b[8] = typ
	binary.BigEndian.PutUint16(b[9:], version12)
	binary.BigEndian.PutUint16(b[11:], uint16(n))
	return b
}

func (h *halfConn) hmac(parts ...[]byte) []byte {
	m := hmac.New(h.mac, h.macKey)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// seal protects a record body.
func (h *halfConn) seal(typ uint8, p []byte, rand io.Reader) ([]byte, error) {
	defer func() { h.seq++ }()
	switch {
	case h.aead != nil:
		explicit := binary.BigEndian.AppendUint64(nil, h.seq) // mbedTLS: the record counter
		nonce := append(append([]byte{}, h.salt...), explicit...)
		return h.aead.Seal(explicit, nonce, p, h.header(typ, len(p))), nil
	case h.block != nil:
		bs := h.block.BlockSize()
		iv := make([]byte, bs)
		if _, err := io.ReadFull(rand, iv); err != nil {
			return nil, err
		}
		body := append([]byte{}, p...)
		if !h.etm {
			body = append(body, h.hmac(h.header(typ, len(p)), p)...)
		}
		pad := bs - (len(body)+1)%bs
		if pad == bs {
			pad = 0
		}
		for i := 0; i <= pad; i++ {
			body = append(body, byte(pad))
		}
		cipher.NewCBCEncrypter(h.block, iv).CryptBlocks(body, body)
		out := append(iv, body...)
		if h.etm {
			garbage := make([]byte, h.mac().Size())
			io.ReadFull(rand, garbage)
			out = append(out, garbage...)
		}
		return out, nil
	}
	return p, nil
}

var errBadMAC = errors.New("bad record MAC")

// open checks and decrypts a record body.
func (h *halfConn) open(typ uint8, c []byte) ([]byte, error) {
	defer func() { h.seq++ }()
	switch {
	case h.aead != nil:
		if len(c) < 8+16 {
			return nil, errBadMAC
		}
		nonce := append(append([]byte{}, h.salt...), c[:8]...)
		p, err := h.aead.Open(nil, nonce, c[8:], h.header(typ, len(c)-8-16))
		if err != nil {
			return nil, errBadMAC
		}
		return p, nil
	case h.block != nil:
		bs, ml := h.block.BlockSize(), h.mac().Size()
		if h.etm {
			if len(c) < bs+bs+ml {
				return nil, errBadMAC
			}
			ct, tag := c[:len(c)-ml], c[len(c)-ml:]
			if !hmac.Equal(tag, h.hmac(h.header(typ, len(ct)), ct)) || (len(ct)-bs)%bs != 0 {
				return nil, errBadMAC
			}
			body := append([]byte{}, ct[bs:]...)
			cipher.NewCBCDecrypter(h.block, ct[:bs]).CryptBlocks(body, body)
			pad := int(body[len(body)-1])
			if pad+1 > len(body) {
				return nil, errBadMAC
			}
			for _, b := range body[len(body)-pad-1:] {
				if int(b) != pad {
					return nil, errBadMAC
				}
			}
			return body[:len(body)-pad-1], nil
		}
		if len(c) < bs+max(bs, ml+1) || len(c)%bs != 0 {
			return nil, errBadMAC
		}
		body := append([]byte{}, c[bs:]...)
		cipher.NewCBCDecrypter(h.block, c[:bs]).CryptBlocks(body, body)
		pad := int(body[len(body)-1])
		good := 1
		if pad+1+ml > len(body) {
			pad, good = 0, 0
		}
		for _, b := range body[len(body)-pad-1:] {
			good &= subtle.ConstantTimeByteEq(b, byte(pad))
		}
		n := len(body) - pad - 1 - ml
		p, tag := body[:n], body[n:n+ml]
		good &= subtle.ConstantTimeCompare(tag, h.hmac(h.header(typ, n), p))
		if good != 1 {
			return nil, errBadMAC
		}
		return p, nil
	}
	return c, nil
}
