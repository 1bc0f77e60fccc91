// Package tls12 is a TLS 1.2 client and server written after mbedTLS 2.16
// as the Mongoose OS firmware builds it (the Cesanta fork, 2.16.11-cesanta):
// the port's cipher suites that the fork compiles (ECDHE, static ECDH and
// RSA key exchanges with AES-128 GCM or CBC; the port lists DHE-RSA too,
// but the fork's config.h leaves that key exchange out), its curves in its
// order, extended master secret, a 32-byte session id that is never
// resumed, and the fork's encrypt-then-MAC bug (see halfConn.etmBug).
//
// It exists because crypto/tls cannot hand its ephemeral key exchange to a
// crypto chip: with an ATECC608A on the bus, mbedTLS generates the ECDHE key
// and computes the premaster secret on the chip (Config.ECDHE), and checks
// P-256 signatures there (Config.VerifyECDSA), logging each step.
package tls12

import (
	"crypto/sha1"
	"crypto/sha256"
	"hash"
)

// Cipher suite ids (IANA).
const (
	ECDHE_ECDSA_AES128_GCM_SHA256 uint16 = 0xC02B
	ECDHE_ECDSA_AES128_CBC_SHA256 uint16 = 0xC023
	ECDHE_RSA_AES128_GCM_SHA256   uint16 = 0xC02F
	ECDHE_RSA_AES128_CBC_SHA256   uint16 = 0xC027
	DHE_RSA_AES128_GCM_SHA256     uint16 = 0x009E
	DHE_RSA_AES128_CBC_SHA256     uint16 = 0x0067
	ECDH_ECDSA_AES128_GCM_SHA256  uint16 = 0xC02D
	ECDH_ECDSA_AES128_CBC_SHA256  uint16 = 0xC025
	ECDH_ECDSA_AES128_CBC_SHA     uint16 = 0xC004
	ECDH_RSA_AES128_GCM_SHA256    uint16 = 0xC031
	ECDH_RSA_AES128_CBC_SHA256    uint16 = 0xC029
	ECDH_RSA_AES128_CBC_SHA       uint16 = 0xC00E
	RSA_AES128_GCM_SHA256         uint16 = 0x009C
	RSA_AES128_CBC_SHA256         uint16 = 0x003C
	RSA_AES128_CBC_SHA            uint16 = 0x002F
)

// PortSuites is mg_s_cipher_list of the Mongoose OS mbedTLS port
// (mgos_ssl_if_mbedtls.c) for the ESP32, in its order. The DHE-RSA suites
// in it are not compiled into the fork: they are never offered or chosen.
var PortSuites = []uint16{
	ECDHE_ECDSA_AES128_GCM_SHA256, ECDHE_ECDSA_AES128_CBC_SHA256,
	ECDHE_RSA_AES128_GCM_SHA256, ECDHE_RSA_AES128_CBC_SHA256,
	DHE_RSA_AES128_GCM_SHA256, DHE_RSA_AES128_CBC_SHA256,
	ECDH_ECDSA_AES128_GCM_SHA256, ECDH_ECDSA_AES128_CBC_SHA256, ECDH_ECDSA_AES128_CBC_SHA,
	ECDH_RSA_AES128_GCM_SHA256, ECDH_RSA_AES128_CBC_SHA256, ECDH_RSA_AES128_CBC_SHA,
	RSA_AES128_GCM_SHA256, RSA_AES128_CBC_SHA256, RSA_AES128_CBC_SHA,
}

// PortSuitesESP8266 is the ESP8266 branch of mg_s_cipher_list: RSA key
// exchange first (ECDHE is too slow without a chip) and no DHE.
var PortSuitesESP8266 = []uint16{
	RSA_AES128_GCM_SHA256, RSA_AES128_CBC_SHA256,
	ECDHE_ECDSA_AES128_GCM_SHA256, ECDHE_ECDSA_AES128_CBC_SHA256,
	ECDHE_RSA_AES128_GCM_SHA256, ECDHE_RSA_AES128_CBC_SHA256,
	ECDH_ECDSA_AES128_GCM_SHA256, ECDH_ECDSA_AES128_CBC_SHA256, ECDH_ECDSA_AES128_CBC_SHA,
	ECDH_RSA_AES128_GCM_SHA256, ECDH_RSA_AES128_CBC_SHA256, ECDH_RSA_AES128_CBC_SHA,
	RSA_AES128_CBC_SHA,
}

// CurveID is a TLS named group.
type CurveID uint16

// Named groups mbedTLS 2.16 speaks in TLS.
const (
	P256 CurveID = 23
	P384 CurveID = 24
	P521 CurveID = 25
)

// Curves is the curve list of the Cesanta mbedTLS fork (ecp.c,
// ecp_supported_curves: secp256r1 first "because of performance and
// cryptochip support", then the other enabled ones). X25519 is compiled in
// but is not a TLS curve in mbedTLS 2.16.
var Curves = []CurveID{P256, P521, P384}

// mbedTLS's MBEDTLS_ECP_DP_* ids, printed by "SW ECDH curve %d".
func (c CurveID) mbedtlsID() int {
	switch c {
	case P256:
		return 3
	case P384:
		return 4
	case P521:
		return 5
	}
	return 0
}

type kx int

const (
	kxECDHE_ECDSA kx = iota
	kxECDHE_RSA
	kxDHE_RSA
	kxECDH_ECDSA
	kxECDH_RSA
	kxRSA
)

// ephemeral reports key exchanges with a ServerKeyExchange.
func (k kx) ephemeral() bool { return k == kxECDHE_ECDSA || k == kxECDHE_RSA }

// usesEC reports key exchanges that need the client's supported curves.
func (k kx) usesEC() bool {
	return k == kxECDHE_ECDSA || k == kxECDHE_RSA || k == kxECDH_ECDSA || k == kxECDH_RSA
}

// compiled reports key exchanges the fork's config.h enables
// (MBEDTLS_KEY_EXCHANGE_DHE_RSA_ENABLED is not).
func (k kx) compiled() bool { return k != kxDHE_RSA }

// ecCert reports key exchanges whose server certificate holds an EC key
// (the others need RSA).
func (k kx) ecCert() bool {
	return k == kxECDHE_ECDSA || k == kxECDH_ECDSA || k == kxECDH_RSA
}

type suite struct {
	id     uint16
	name   string // mbedTLS's name
	kx     kx
	gcm    bool
	mac    func() hash.Hash // CBC only
	macLen int
}

var suites = []suite{
	{ECDHE_ECDSA_AES128_GCM_SHA256, "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", kxECDHE_ECDSA, true, nil, 0},
	{ECDHE_ECDSA_AES128_CBC_SHA256, "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256", kxECDHE_ECDSA, false, sha256.New, 32},
	{ECDHE_RSA_AES128_GCM_SHA256, "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256", kxECDHE_RSA, true, nil, 0},
	{ECDHE_RSA_AES128_CBC_SHA256, "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256", kxECDHE_RSA, false, sha256.New, 32},
	{DHE_RSA_AES128_GCM_SHA256, "TLS-DHE-RSA-WITH-AES-128-GCM-SHA256", kxDHE_RSA, true, nil, 0},
	{DHE_RSA_AES128_CBC_SHA256, "TLS-DHE-RSA-WITH-AES-128-CBC-SHA256", kxDHE_RSA, false, sha256.New, 32},
	{ECDH_ECDSA_AES128_GCM_SHA256, "TLS-ECDH-ECDSA-WITH-AES-128-GCM-SHA256", kxECDH_ECDSA, true, nil, 0},
	{ECDH_ECDSA_AES128_CBC_SHA256, "TLS-ECDH-ECDSA-WITH-AES-128-CBC-SHA256", kxECDH_ECDSA, false, sha256.New, 32},
	{ECDH_ECDSA_AES128_CBC_SHA, "TLS-ECDH-ECDSA-WITH-AES-128-CBC-SHA", kxECDH_ECDSA, false, sha1.New, 20},
	{ECDH_RSA_AES128_GCM_SHA256, "TLS-ECDH-RSA-WITH-AES-128-GCM-SHA256", kxECDH_RSA, true, nil, 0},
	{ECDH_RSA_AES128_CBC_SHA256, "TLS-ECDH-RSA-WITH-AES-128-CBC-SHA256", kxECDH_RSA, false, sha256.New, 32},
	{ECDH_RSA_AES128_CBC_SHA, "TLS-ECDH-RSA-WITH-AES-128-CBC-SHA", kxECDH_RSA, false, sha1.New, 20},
	{RSA_AES128_GCM_SHA256, "TLS-RSA-WITH-AES-128-GCM-SHA256", kxRSA, true, nil, 0},
	{RSA_AES128_CBC_SHA256, "TLS-RSA-WITH-AES-128-CBC-SHA256", kxRSA, false, sha256.New, 32},
	{RSA_AES128_CBC_SHA, "TLS-RSA-WITH-AES-128-CBC-SHA", kxRSA, false, sha1.New, 20},
}

// suiteByID returns a suite the fork compiles, or nil.
func suiteByID(id uint16) *suite {
	for i := range suites {
		if suites[i].id == id && suites[i].kx.compiled() {
			return &suites[i]
		}
	}
	return nil
}

// SuiteName returns mbedTLS's name of a suite id ("TLS-ECDHE-ECDSA-WITH-...").
func SuiteName(id uint16) string {
	for _, s := range suites {
		if s.id == id {
			return s.name
		}
	}
	return "unknown"
}
