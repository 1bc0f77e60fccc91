package tls12

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// clientHelloMsg builds the ClientHello of ssl_cli.c.
func (c *Conn) clientHelloMsg() (*clientHello, []CurveID, []uint16) {
	cfg := c.cfg
	ch := &clientHello{version: version12, random: make([]byte, 32), compressions: []byte{0}}
	binary.BigEndian.PutUint32(ch.random, uint32(cfg.now().Unix()))
	io.ReadFull(cfg.rand(), ch.random[4:])
	for _, id := range cfg.suites() {
		if suiteByID(id) != nil { // the DHE suites of the port's list are not compiled
			ch.suites = append(ch.suites, id)
		}
	}
	ch.suites = append(ch.suites, scsvRenegotiation)

	var sigAlgs []uint16
	for _, h := range sigHashes {
		if cfg.Chip == nil || h == hashSHA256 { // the chip verifies SHA-256 only
			sigAlgs = append(sigAlgs, uint16(h)<<8|sigECDSA)
		}
		sigAlgs = append(sigAlgs, uint16(h)<<8|sigRSA)
	}
	curves := cfg.curves()
	if cfg.Chip != nil {
		curves = []CurveID{P256}
	}
	var b cryptobyte.Builder
	if cfg.ServerName != "" {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint8(0)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(cfg.ServerName)) })
		})
		ch.exts = append(ch.exts, extension{extServerName, b.BytesOrPanic()})
	}
	b = cryptobyte.Builder{}
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, a := range sigAlgs {
			b.AddUint16(a)
		}
	})
	ch.exts = append(ch.exts, extension{extSigAlgs, b.BytesOrPanic()})
	b = cryptobyte.Builder{}
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, cv := range curves {
			b.AddUint16(uint16(cv))
		}
	})
	ch.exts = append(ch.exts,
		extension{extSupportedGroups, b.BytesOrPanic()},
		extension{extPointFormats, []byte{1, 0}})
	if !cfg.NoEncryptThenMAC {
		ch.exts = append(ch.exts, extension{extEtM, nil})
	}
	ch.exts = append(ch.exts, extension{extEMS, nil})
	return ch, curves, sigAlgs
}

// clientHandshake runs the client side of a full handshake as ssl_cli.c.
func (c *Conn) clientHandshake() error {
	cfg := c.cfg
	ch, curves, sigAlgs := c.clientHelloMsg()
	if err := c.writeHandshake(ch.marshal()); err != nil {
		return err
	}
	m, err := c.readHandshake(hsServerHello)
	if err != nil {
		return err
	}
	sh, ok := parseServerHello(m)
	if !ok {
		return alertf(alertDecodeError, "bad ServerHello")
	}
	if sh.version != version12 {
		return alertf(alertProtocolVersion, "server version %#04x", sh.version)
	}
	st := suiteByID(sh.suite)
	if st == nil || !slices.Contains(cfg.suites(), sh.suite) {
		return alertf(alertIllegalParameter, "server chose suite %#04x", sh.suite)
	}
	if sh.etm && (st.gcm || cfg.NoEncryptThenMAC) {
		return alertf(alertUnsupportedExtension, "unexpected encrypt_then_mac")
	}
	etm := sh.etm
	c.state.CipherSuite, c.state.SessionID, c.state.ExtendedMaster, c.state.EncryptThenMAC = st.id, sh.sessionID, sh.ems, etm
	c.state.ServerName = cfg.ServerName

	m, err = c.readHandshake(hsCertificate)
	if err != nil {
		return err
	}
	chain, ok := parseCertificate(m)
	if !ok || len(chain) == 0 {
		return alertf(alertDecodeError, "bad server Certificate")
	}
	var peer *x509.Certificate
	switch {
	case cfg.VerifyPeerCertificate != nil:
		var verified []*x509.Certificate
		if verified, err = cfg.VerifyPeerCertificate(chain); err == nil && len(verified) > 0 {
			if err = c.chipCheckChain(verified); err == nil {
				peer = verified[0]
			}
		} else if err == nil {
			err = errors.New("no verified chain")
		}
	case cfg.RootCAs != nil:
		peer, err = c.verifyChain(chain, cfg.RootCAs, cfg.ServerName, x509.ExtKeyUsageServerAuth)
	default:
		peer, err = x509.ParseCertificate(chain[0])
	}
	if err != nil {
		return asAlert(err, alertBadCertificate)
	}
	c.state.PeerCertificates = []*x509.Certificate{peer}
	if st.kx.ecCert() != isEC(peer.PublicKey) {
		return alertf(alertHandshakeFailure, "server key does not fit the suite")
	}

	var ecKey ECDHKey
	var peerPoint []byte
	if st.kx.ephemeral() {
		m, err = c.readHandshake(hsServerKeyExchange)
		if err != nil {
			return err
		}
		s := cryptobyte.String(m[4:])
		start := s
		var ct uint8
		var cv uint16
		var point cryptobyte.String
		if !s.ReadUint8(&ct) || ct != 3 || !s.ReadUint16(&cv) || !s.ReadUint8LengthPrefixed(&point) {
			return alertf(alertDecodeError, "bad ServerKeyExchange")
		}
		if !slices.Contains(curves, CurveID(cv)) {
			return alertf(alertIllegalParameter, "server chose curve %d", cv)
		}
		c.state.Curve = CurveID(cv)
		peerPoint = point
		params := start[:len(start)-len(s)]
		var h, sig uint8
		var signature cryptobyte.String
		if !s.ReadUint8(&h) || !s.ReadUint8(&sig) || !s.ReadUint16LengthPrefixed(&signature) || !s.Empty() {
			return alertf(alertDecodeError, "bad ServerKeyExchange signature")
		}
		if !slices.Contains(sigAlgs, uint16(h)<<8|uint16(sig)) {
			return alertf(alertIllegalParameter, "server signed with %d/%d", h, sig)
		}
		if err := c.verifySig(peer.PublicKey, h, sig, digest(h, ch.random, sh.random, params), signature); err != nil {
			return err
		}
	}

	certRequested := false
	m, err = c.readHandshake(0)
	if err != nil {
		return err
	}
	if m[0] == hsCertificateRequest {
		certRequested = true
		if m, err = c.readHandshake(hsServerHelloDone); err != nil {
			return err
		}
	}
	if m[0] != hsServerHelloDone || len(m) != 4 {
		return alertf(alertUnexpectedMessage, "handshake message %d, want ServerHelloDone", m[0])
	}

	sentCert := false
	if certRequested {
		var own [][]byte
		if cfg.Certificate != nil {
			own = cfg.Certificate.Certificate
		}
		sentCert = len(own) > 0
		if err := c.writeHandshake(certificateMsg(own)); err != nil {
			return err
		}
	}

	var pms []byte
	var cke func(b *cryptobyte.Builder)
	switch st.kx {
	case kxECDHE_ECDSA, kxECDHE_RSA, kxECDH_ECDSA, kxECDH_RSA:
		curve := c.state.Curve
		if !st.kx.ephemeral() { // static ECDH: the server certificate's key
			pub, ok := peer.PublicKey.(*ecdsa.PublicKey)
			if !ok {
				return alertf(alertHandshakeFailure, "static ECDH needs an EC server key")
			}
			curve, c.state.Curve = curveOf(pub), curveOf(pub)
			pk, err := pub.ECDH()
			if err != nil {
				return alertf(alertHandshakeFailure, "%v", err)
			}
			peerPoint = pk.Bytes()
		}
		if ecKey, err = c.newECDHKey(curve); err != nil {
			return err
		}
		if pms, err = ecKey.Shared(peerPoint); err != nil {
			return asAlert(err, alertIllegalParameter)
		}
		cke = func(b *cryptobyte.Builder) {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(ecKey.Public()) })
		}
	case kxRSA:
		pub, ok := peer.PublicKey.(*rsa.PublicKey)
		if !ok {
			return alertf(alertHandshakeFailure, "RSA key exchange needs an RSA server key")
		}
		pms = make([]byte, 48)
		pms[0], pms[1] = 3, 3
		io.ReadFull(cfg.rand(), pms[2:])
		enc, err := rsa.EncryptPKCS1v15(cfg.rand(), pub, pms)
		if err != nil {
			return alertf(alertInternalError, "%v", err)
		}
		cke = func(b *cryptobyte.Builder) {
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(enc) })
		}
	}
	if err := c.writeHandshake(handshakeMsg(hsClientKeyExchange, cke)); err != nil {
		return err
	}
	master := masterSecret(pms, ch.random, sh.random, sha256Of(c.transcript.Bytes()), sh.ems)

	if sentCert {
		signer, ok := cfg.Certificate.PrivateKey.(crypto.Signer)
		if !ok {
			return alertf(alertInternalError, "client key cannot sign")
		}
		sig := uint8(sigRSA)
		if isEC(signer.Public()) {
			sig = sigECDSA
		}
		signature, err := signer.Sign(cfg.rand(), digest(hashSHA256, c.transcript.Bytes()), crypto.SHA256)
		if err != nil {
			return alertf(alertInternalError, "CertificateVerify signature: %v", err)
		}
		if err := c.writeHandshake(handshakeMsg(hsCertificateVerify, func(b *cryptobyte.Builder) {
			b.AddUint8(hashSHA256)
			b.AddUint8(sig)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(signature) })
		})); err != nil {
			return err
		}
	}

	cKey, sKey, cMAC, sMAC, cIV, sIV := keys(st, master, ch.random, sh.random)
	if err := c.sendFinished(st, master, cKey, cMAC, cIV, etm, "client finished"); err != nil {
		return err
	}
	return c.readFinished(st, master, sKey, sMAC, sIV, etm, "server finished")
}

func isEC(pub crypto.PublicKey) bool {
	_, ok := pub.(*ecdsa.PublicKey)
	return ok
}
