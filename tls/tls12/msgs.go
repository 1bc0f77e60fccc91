package tls12

import (
	"golang.org/x/crypto/cryptobyte"
)

// Handshake message types.
const (
	hsHelloRequest       = 0
	hsClientHello        = 1
	hsServerHello        = 2
	hsCertificate        = 11
	hsServerKeyExchange  = 12
	hsCertificateRequest = 13
	hsServerHelloDone    = 14
	hsCertificateVerify  = 15
	hsClientKeyExchange  = 16
	hsFinished           = 20
)

// Extension ids.
const (
	extServerName      = 0
	extMaxFragment     = 1
	extSupportedGroups = 10
	extPointFormats    = 11
	extSigAlgs         = 13
	extALPN            = 16
	extEtM             = 22
	extEMS             = 23
	extRenegotiation   = 0xff01
)

const scsvRenegotiation = 0x00FF

// Hash and signature algorithm ids of TLS 1.2 (RFC 5246 7.4.1.4.1).
const (
	hashSHA1   = 2
	hashSHA224 = 3
	hashSHA256 = 4
	hashSHA384 = 5
	hashSHA512 = 6
	sigRSA     = 1
	sigECDSA   = 3
)

// extension is one hello extension, kept in the order it came.
type extension struct {
	typ  uint16
	data []byte
}

type clientHello struct {
	raw          []byte
	version      uint16
	random       []byte
	sessionID    []byte
	suites       []uint16
	compressions []byte
	exts         []extension

	serverName   string
	curves       []CurveID
	curvesSent   bool
	pointFormats bool
	sigAlgs      []uint16 // hash<<8 | sig
	sigAlgsSent  bool
	etm, ems     bool
	secureReneg  bool
	maxFrag      uint8
	alpn         []string
}

func (m *clientHello) marshal() []byte {
	var b cryptobyte.Builder
	b.AddUint8(hsClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(m.version)
		b.AddBytes(m.random)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.sessionID) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, s := range m.suites {
				b.AddUint16(s)
			}
		})
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.compressions) })
		addExtensions(b, m.exts)
	})
	return b.BytesOrPanic()
}

func addExtensions(b *cryptobyte.Builder, exts []extension) {
	if len(exts) == 0 {
		return // mbedTLS leaves the block out
	}
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, e := range exts {
			b.AddUint16(e.typ)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.data) })
		}
	})
}

// parseClientHello decodes a ClientHello message (with its 4-byte header).
func parseClientHello(raw []byte) (*clientHello, bool) {
	m := &clientHello{raw: raw}
	s := cryptobyte.String(raw[4:])
	var sid, suites, comps cryptobyte.String
	m.random = make([]byte, 32)
	if !s.ReadUint16(&m.version) || !s.CopyBytes(m.random) ||
		!s.ReadUint8LengthPrefixed(&sid) || len(sid) > 32 ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites)%2 != 0 || len(suites) == 0 ||
		!s.ReadUint8LengthPrefixed(&comps) || len(comps) == 0 {
		return nil, false
	}
	m.sessionID, m.compressions = sid, comps
	for !suites.Empty() {
		var id uint16
		suites.ReadUint16(&id)
		m.suites = append(m.suites, id)
		if id == scsvRenegotiation {
			m.secureReneg = true
		}
	}
	exts, ok := readExtensions(s)
	if !ok {
		return nil, false
	}
	m.exts = exts
	for _, e := range exts {
		data := cryptobyte.String(e.data)
		switch e.typ {
		case extServerName:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) {
				return nil, false
			}
			for !list.Empty() {
				var nt uint8
				var name cryptobyte.String
				if !list.ReadUint8(&nt) || !list.ReadUint16LengthPrefixed(&name) {
					return nil, false
				}
				if nt == 0 {
					m.serverName = string(name)
				}
			}
		case extSupportedGroups:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || len(list)%2 != 0 || !data.Empty() {
				return nil, false
			}
			m.curvesSent = true
			for !list.Empty() {
				var c uint16
				list.ReadUint16(&c)
				m.curves = append(m.curves, CurveID(c))
			}
		case extPointFormats:
			var list cryptobyte.String
			if !data.ReadUint8LengthPrefixed(&list) {
				return nil, false
			}
			m.pointFormats = true
		case extSigAlgs:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || len(list)%2 != 0 {
				return nil, false
			}
			m.sigAlgsSent = true
			for !list.Empty() {
				var a uint16
				list.ReadUint16(&a)
				m.sigAlgs = append(m.sigAlgs, a)
			}
		case extEtM:
			m.etm = true
		case extEMS:
			m.ems = true
		case extRenegotiation:
			var rc cryptobyte.String
			if !data.ReadUint8LengthPrefixed(&rc) || len(rc) != 0 {
				return nil, false
			}
			m.secureReneg = true
		case extMaxFragment:
			if len(data) != 1 {
				return nil, false
			}
			m.maxFrag = data[0]
		case extALPN:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) {
				return nil, false
			}
			for !list.Empty() {
				var p cryptobyte.String
				if !list.ReadUint8LengthPrefixed(&p) || len(p) == 0 {
					return nil, false
				}
				m.alpn = append(m.alpn, string(p))
			}
		}
	}
	return m, true
}

// readExtensions reads a hello's optional extension block (what is left
// of s); a block with trailing bytes or an extension twice is malformed.
func readExtensions(s cryptobyte.String) ([]extension, bool) {
	if s.Empty() {
		return nil, true
	}
	var block cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&block) || !s.Empty() {
		return nil, false
	}
	var exts []extension
	seen := map[uint16]bool{}
	for !block.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !block.ReadUint16(&typ) || !block.ReadUint16LengthPrefixed(&data) || seen[typ] {
			return nil, false
		}
		seen[typ] = true
		exts = append(exts, extension{typ, data})
	}
	return exts, true
}

type serverHello struct {
	version   uint16
	random    []byte
	sessionID []byte
	suite     uint16
	exts      []extension

	etm, ems, secureReneg bool
	maxFrag               uint8
}

func (m *serverHello) marshal() []byte {
	var b cryptobyte.Builder
	b.AddUint8(hsServerHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(m.version)
		b.AddBytes(m.random)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.sessionID) })
		b.AddUint16(m.suite)
		b.AddUint8(0)
		addExtensions(b, m.exts)
	})
	return b.BytesOrPanic()
}

func parseServerHello(raw []byte) (*serverHello, bool) {
	m := &serverHello{random: make([]byte, 32)}
	s := cryptobyte.String(raw[4:])
	var sid cryptobyte.String
	var comp uint8
	if !s.ReadUint16(&m.version) || !s.CopyBytes(m.random) || !s.ReadUint8LengthPrefixed(&sid) || len(sid) > 32 ||
		!s.ReadUint16(&m.suite) || !s.ReadUint8(&comp) || comp != 0 {
		return nil, false
	}
	m.sessionID = sid
	exts, ok := readExtensions(s)
	if !ok {
		return nil, false
	}
	m.exts = exts
	for _, e := range exts {
		data := e.data
		switch e.typ {
		case extEtM:
			m.etm = true
		case extEMS:
			m.ems = true
		case extRenegotiation:
			m.secureReneg = true
		case extMaxFragment:
			if len(data) == 1 {
				m.maxFrag = data[0]
			}
		}
	}
	return m, true
}

// handshakeMsg frames a handshake body.
func handshakeMsg(typ uint8, body func(b *cryptobyte.Builder)) []byte {
	var b cryptobyte.Builder
	b.AddUint8(typ)
	b.AddUint24LengthPrefixed(body)
	return b.BytesOrPanic()
}

func certificateMsg(chain [][]byte) []byte {
	return handshakeMsg(hsCertificate, func(b *cryptobyte.Builder) {
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, c := range chain {
				b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(c) })
			}
		})
	})
}

func parseCertificate(raw []byte) ([][]byte, bool) {
	s := cryptobyte.String(raw[4:])
	var list cryptobyte.String
	if !s.ReadUint24LengthPrefixed(&list) || !s.Empty() {
		return nil, false
	}
	var certs [][]byte
	for !list.Empty() {
		var c cryptobyte.String
		if !list.ReadUint24LengthPrefixed(&c) || len(c) == 0 {
			return nil, false
		}
		certs = append(certs, c)
	}
	return certs, true
}
