package tls12

import (
	"errors"
	"fmt"
)

// mbedTLS error codes (ssl.h, x509.h) of the failures this engine has.
const (
	errInvalidMAC          = -0x7180
	errInvalidRecord       = -0x7200
	errNoCipherChosen      = -0x7380
	errNoClientCertificate = -0x7480
	errUnexpectedMessage   = -0x7700
	errFatalAlert          = -0x7780
	errBadClientHello      = -0x7900
	errBadServerHello      = -0x7980
	errBadCertificate      = -0x7A00
	errBadCertRequest      = -0x7A80
	errBadServerKX         = -0x7B00
	errBadServerHelloDone  = -0x7B80
	errBadClientKX         = -0x7C00
	errBadCertVerify       = -0x7D80
	errBadCCS              = -0x7E00
	errBadFinished         = -0x7E80
	errBadProtocolVersion  = -0x6E80
	errInternal            = -0x6C00
	errX509VerifyFailed    = -0x2700
)

// parseError is the mbedTLS error for a malformed handshake message.
var parseError = map[uint8]int{
	hsClientHello: errBadClientHello, hsServerHello: errBadServerHello, hsCertificate: errBadCertificate,
	hsServerKeyExchange: errBadServerKX, hsCertificateRequest: errBadCertRequest, hsServerHelloDone: errBadServerHelloDone,
	hsClientKeyExchange: errBadClientKX, hsCertificateVerify: errBadCertVerify, hsFinished: errBadFinished,
}

// mbedTLSError is the code mbedtls_ssl_handshake/read would return for
// err, 0 for errors that are the network's (EOF, resets, deadlines).
func (c *Conn) mbedTLSError(err error) int {
	var a *AlertError
	switch {
	case errors.Is(err, ErrNoClientCertificate):
		return errNoClientCertificate
	case !errors.As(err, &a):
		return 0
	case a.Received:
		return errFatalAlert
	}
	switch a.Desc {
	case alertBadRecordMAC:
		return errInvalidMAC
	case alertRecordOverflow:
		return errInvalidRecord
	case alertProtocolVersion:
		return errBadProtocolVersion
	case alertBadCertificate, alertUnknownCA, alertCertificateExpired:
		return errX509VerifyFailed
	case alertUnexpectedMessage:
		return errUnexpectedMessage
	case alertInternalError:
		return errInternal
	case alertHandshakeFailure:
		if c.phase == hsClientHello && !c.isClient {
			return errNoCipherChosen
		}
	}
	if c.phase == recordCCS {
		return errBadCCS
	}
	if code, ok := parseError[c.phase]; ok {
		return code
	}
	return errInternal
}

// logError prints the port's line for a failed handshake or read
// (mgos_ssl_if_mbedtls.c, mg_ssl_if_mbed_err).
func (c *Conn) logError(err error) {
	if code := c.mbedTLSError(err); code != 0 && c.cfg.Log != nil {
		c.cfg.Log.Error(fmt.Sprintf("%p mbedTLS error: -0x%04x", c, -code), "src", "mgos_ssl_if_mbedtls.c:291")
	}
}
