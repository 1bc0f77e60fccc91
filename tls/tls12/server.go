package tls12

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// ErrNoClientCertificate is the handshake's end when client
// authentication is required and the client sends no certificate
// (MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE: mbedTLS sends no alert).
var ErrNoClientCertificate = errors.New("tls12: client sent no certificate")

// sigHashes is ssl_preset_default_hashes: SHA-512, -384, -256, -224, SHA-1.
var sigHashes = []uint8{hashSHA512, hashSHA384, hashSHA256, hashSHA224, hashSHA1}

// serverHandshake runs the server side of a full handshake as ssl_srv.c.
func (c *Conn) serverHandshake() error {
	cfg := c.cfg
	if cfg.Certificate == nil || len(cfg.Certificate.Certificate) == 0 {
		return alertf(alertInternalError, "no server certificate")
	}
	key := cfg.Certificate.PrivateKey
	leaf := cfg.Certificate.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificate.Certificate[0]); err != nil {
			return alertf(alertInternalError, "%v", err)
		}
	}

	raw, err := c.readHandshake(hsClientHello)
	if err != nil {
		return err
	}
	ch, ok := parseClientHello(raw)
	if !ok {
		return alertf(alertDecodeError, "bad ClientHello")
	}
	if ch.version < version12 {
		return alertf(alertProtocolVersion, "client offers %#04x only", ch.version)
	}
	if !slices.Contains(ch.compressions, 0) {
		return alertf(alertHandshakeFailure, "no null compression")
	}

	// Signature hashes per signature algorithm: the first acceptable one of
	// the client's list (SHA-256 only while the chip is in use).
	sigHash := map[uint8]uint8{}
	if ch.sigAlgsSent {
		for _, a := range ch.sigAlgs {
			h, s := uint8(a>>8), uint8(a)
			if (s != sigRSA && s != sigECDSA) || !slices.Contains(sigHashes, h) || sigHash[s] != 0 {
				continue
			}
			if cfg.Chip != nil && h != hashSHA256 {
				continue
			}
			sigHash[s] = h
		}
	} else {
		sigHash[sigRSA], sigHash[sigECDSA] = hashSHA1, hashSHA1
	}
	var clientCurves []CurveID
	for _, cv := range ch.curves {
		if ecdhCurve(cv) != nil { // a curve mbedTLS knows
			clientCurves = append(clientCurves, cv)
		}
	}

	// The server's order decides (MBEDTLS_SSL_SRV_RESPECT_CLIENT_PREFERENCE
	// is off).
	var st *suite
	for _, id := range cfg.suites() {
		s := suiteByID(id)
		if s == nil || !slices.Contains(ch.suites, id) {
			continue
		}
		if s.kx.usesEC() && len(clientCurves) == 0 {
			continue
		}
		if sig := s.kx.sigAlg(); sig != 0 && sigHash[sig] == 0 {
			continue
		}
		if s.kx.ecCert() != isEC(leaf.PublicKey) {
			continue
		}
		if s.kx == kxECDHE_ECDSA || s.kx == kxECDH_ECDSA {
			if _, chip := key.(ChipKey); !chip && !slices.Contains(clientCurves, curveOf(leaf.PublicKey.(*ecdsa.PublicKey))) {
				continue // ssl_check_key_curve
			}
		}
		st = s
		break
	}
	if st == nil {
		return alertf(alertHandshakeFailure, "got no ciphersuites in common")
	}
	c.state.CipherSuite, c.state.ServerName = st.id, ch.serverName

	sh := &serverHello{version: version12, random: make([]byte, 32), sessionID: make([]byte, 32), suite: st.id}
	binary.BigEndian.PutUint32(sh.random, uint32(cfg.now().Unix()))
	if _, err := io.ReadFull(cfg.rand(), sh.random[4:]); err != nil {
		return alertf(alertInternalError, "%v", err)
	}
	if _, err := io.ReadFull(cfg.rand(), sh.sessionID); err != nil {
		return alertf(alertInternalError, "%v", err)
	}
	if ch.secureReneg {
		sh.exts = append(sh.exts, extension{extRenegotiation, []byte{0}})
	}
	if ch.maxFrag >= 1 && ch.maxFrag <= 4 {
		sh.exts = append(sh.exts, extension{extMaxFragment, []byte{ch.maxFrag}})
		c.maxOut = 256 << ch.maxFrag
	}
	etm := ch.etm && !st.gcm && !cfg.NoEncryptThenMAC
	if etm {
		sh.exts = append(sh.exts, extension{extEtM, nil})
	}
	if ch.ems {
		sh.exts = append(sh.exts, extension{extEMS, nil})
	}
	if st.kx.usesEC() && ch.pointFormats {
		sh.exts = append(sh.exts, extension{extPointFormats, []byte{1, 0}})
	}
	c.state.SessionID, c.state.ExtendedMaster, c.state.EncryptThenMAC = sh.sessionID, ch.ems, etm
	if err := c.writeHandshake(sh.marshal()); err != nil {
		return err
	}
	if err := c.writeHandshake(certificateMsg(cfg.Certificate.Certificate)); err != nil {
		return err
	}

	var ecKey ECDHKey
	if st.kx.ephemeral() {
		var params []byte
		curve := CurveID(0)
		for _, cv := range cfg.curves() {
			if slices.Contains(clientCurves, cv) {
				curve = cv
				break
			}
		}
		if curve == 0 {
			return alertf(alertHandshakeFailure, "no matching curve for ECDHE")
		}
		c.state.Curve = curve
		if ecKey, err = c.newECDHKey(curve); err != nil {
			return err
		}
		var b cryptobyte.Builder
		b.AddUint8(3) // named_curve
		b.AddUint16(uint16(curve))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(ecKey.Public()) })
		params = b.BytesOrPanic()
		sig := st.kx.sigAlg()
		h := sigHash[sig]
		signer, ok := key.(crypto.Signer)
		if !ok {
			return alertf(alertInternalError, "key cannot sign")
		}
		hf, _ := hashFor(h)
		signature, err := signer.Sign(cfg.rand(), digest(h, ch.random, sh.random, params), hf)
		if err != nil {
			return alertf(alertInternalError, "ServerKeyExchange signature: %v", err)
		}
		if err := c.writeHandshake(handshakeMsg(hsServerKeyExchange, func(b *cryptobyte.Builder) {
			b.AddBytes(params)
			b.AddUint8(h)
			b.AddUint8(sig)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(signature) })
		})); err != nil {
			return err
		}
	}
	if cfg.ClientCAs != nil {
		if err := c.writeHandshake(handshakeMsg(hsCertificateRequest, func(b *cryptobyte.Builder) {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte{1, 64}) })
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, h := range []uint8{hashSHA384, hashSHA256} {
					b.AddBytes([]byte{h, sigRSA, h, sigECDSA})
				}
			})
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, dn := range cfg.ClientCAsDN {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(dn) })
				}
			})
		})); err != nil {
			return err
		}
	}
	if err := c.writeHandshake([]byte{hsServerHelloDone, 0, 0, 0}); err != nil {
		return err
	}

	var peer *x509.Certificate
	if cfg.ClientCAs != nil {
		m, err := c.readHandshake(hsCertificate)
		if err != nil {
			return err
		}
		chain, ok := parseCertificate(m)
		if !ok {
			return alertf(alertDecodeError, "bad Certificate")
		}
		if len(chain) == 0 {
			return ErrNoClientCertificate
		}
		if peer, err = c.verifyChain(chain, cfg.ClientCAs, "", x509.ExtKeyUsageClientAuth); err != nil {
			return err
		}
	}

	m, err := c.readHandshake(hsClientKeyExchange)
	if err != nil {
		return err
	}
	body := cryptobyte.String(m[4:])
	var pms []byte
	switch st.kx {
	case kxECDHE_ECDSA, kxECDHE_RSA, kxECDH_ECDSA, kxECDH_RSA:
		var point cryptobyte.String
		if !body.ReadUint8LengthPrefixed(&point) || !body.Empty() || len(point) == 0 {
			return alertf(alertDecodeError, "bad ClientKeyExchange")
		}
		if ecKey != nil {
			pms, err = ecKey.Shared(point)
		} else {
			pms, err = c.staticECDH(key, point)
		}
		if err != nil {
			return asAlert(err, alertIllegalParameter)
		}
	case kxRSA:
		var enc cryptobyte.String
		if !body.ReadUint16LengthPrefixed(&enc) || !body.Empty() {
			return alertf(alertDecodeError, "bad ClientKeyExchange")
		}
		// A random premaster secret on any failure (Bleichenbacher).
		pms = make([]byte, 48)
		io.ReadFull(cfg.rand(), pms)
		if d, ok := key.(*rsa.PrivateKey); ok {
			if dec, err := rsa.DecryptPKCS1v15(nil, d, enc); err == nil && len(dec) == 48 {
				good := subtle.ConstantTimeByteEq(dec[0], 3) & subtle.ConstantTimeByteEq(dec[1], 3)
				subtle.ConstantTimeCopy(good, pms, dec)
			}
		}
	}
	sessionHash := sha256Of(c.transcript.Bytes())
	master := masterSecret(pms, ch.random, sh.random, sessionHash, ch.ems)

	if peer != nil {
		verifyHash := c.transcript.Bytes()
		m, err := c.readHandshake(hsCertificateVerify)
		if err != nil {
			return err
		}
		s := cryptobyte.String(m[4:])
		var h, sig uint8
		var signature cryptobyte.String
		if !s.ReadUint8(&h) || !s.ReadUint8(&sig) || !s.ReadUint16LengthPrefixed(&signature) || !s.Empty() {
			return alertf(alertDecodeError, "bad CertificateVerify")
		}
		if h != hashSHA256 && h != hashSHA384 {
			return alertf(alertIllegalParameter, "CertificateVerify hash %d", h)
		}
		if err := c.verifySig(peer.PublicKey, h, sig, digest(h, verifyHash), signature); err != nil {
			return err
		}
	}

	cKey, sKey, cMAC, sMAC, cIV, sIV := keys(st, master, ch.random, sh.random)
	if err := c.readFinished(st, master, cKey, cMAC, cIV, etm, "client finished"); err != nil {
		return err
	}
	if err := c.sendFinished(st, master, sKey, sMAC, sIV, etm, "server finished"); err != nil {
		return err
	}
	if peer != nil {
		c.state.PeerCertificates = []*x509.Certificate{peer}
	}
	return nil
}

// sigAlg is the signature algorithm a key exchange's ServerKeyExchange
// uses, 0 for none.
func (k kx) sigAlg() uint8 {
	switch k {
	case kxECDHE_ECDSA:
		return sigECDSA
	case kxECDHE_RSA:
		return sigRSA
	}
	return 0
}

// verifyChain parses and verifies a peer's chain against roots (mbedTLS's
// x509_crt_verify with the alerts of ssl_parse_certificate).
func (c *Conn) verifyChain(chain [][]byte, roots *x509.CertPool, name string, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, raw := range chain {
		cert, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, alertf(alertBadCertificate, "%v", err)
		}
		certs = append(certs, cert)
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name,
		CurrentTime: c.cfg.now(), KeyUsages: []x509.ExtKeyUsage{usage}})
	var ci x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case err == nil:
		if err := c.chipCheckChain(chains[0]); err != nil {
			return nil, err
		}
		return certs[0], nil
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return nil, alertf(alertCertificateExpired, "%v", err)
	case errors.As(err, &ua):
		return nil, alertf(alertUnknownCA, "%v", err)
	default:
		return nil, alertf(alertBadCertificate, "%v", err)
	}
}

func asAlert(err error, desc uint8) error {
	var a *AlertError
	if errors.As(err, &a) {
		return err
	}
	return alertf(desc, "%v", err)
}

// chipCheckChain redoes, on the chip, the P-256 ECDSA-with-SHA-256
// signature checks of a verified chain (leaf first), as mbedTLS's x509
// verification does through ecdsa_atca_verify when the chip is available.
func (c *Conn) chipCheckChain(chain []*x509.Certificate) error {
	if c.cfg.Chip == nil {
		return nil
	}
	for i := 0; i+1 < len(chain); i++ {
		child, parent := chain[i], chain[i+1]
		pub, ok := parent.PublicKey.(*ecdsa.PublicKey)
		if !ok || child.SignatureAlgorithm != x509.ECDSAWithSHA256 || curveOf(pub) != P256 {
			continue
		}
		if err := c.verifySig(pub, hashSHA256, sigECDSA, sha256Of(child.RawTBSCertificate), child.Signature); err != nil {
			return alertf(alertBadCertificate, "certificate signature: %v", err)
		}
	}
	return nil
}
