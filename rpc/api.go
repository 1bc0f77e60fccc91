// Package rpc implements Mongoose OS RPC (mg_rpc): frames, the dispatcher,
// and the types shared by channels, services and the auth/ACL guard.
package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Channel types as the firmware names them (used in ACL "ch_type" and logs).
const (
	ChanWS   = "WS_in"
	ChanHTTP = "HTTP"
	ChanUART = "UART"
	ChanMQTT = "MQTT"
)

// ChannelInfo describes the channel a request arrived on.
type ChannelInfo struct {
	Type string // one of the Chan* constants
	Info string // peer "IP:port", "UART0", or "" for MQTT
	// Persistent channels (UART, MQTT) survive invalid frames; others are closed.
	Persistent bool
	// HTTPAuth is the channel's own credentials (the HTTP request's or the
	// WebSocket upgrade request's Authorization header), nil if none.
	HTTPAuth *HTTPDigest
}

// FrameAuth is the in-frame "auth" object mos sends after an in-band 401.
// Nonce and CNonce arrive as JSON numbers.
type FrameAuth struct {
	Realm     string      `json:"realm"`
	Username  string      `json:"username"`
	Nonce     json.Number `json:"nonce"`
	CNonce    json.Number `json:"cnonce"`
	Algorithm string      `json:"algorithm,omitempty"`
	Response  string      `json:"response"`
	Opaque    string      `json:"opaque,omitempty"`
}

// HTTPDigest is an HTTP "Authorization: Digest ..." header received on the
// HTTP channel (POST /rpc) or on the WebSocket upgrade request, together with
// the request line it must be verified against.
type HTTPDigest struct {
	Method string            // HTTP method of the request that carried it
	URI    string            // request URI including the query
	Params map[string]string // username, realm, nonce, uri, nc, cnonce, qop, response, algorithm, opaque
}

// Request is one RPC request being dispatched.
type Request struct {
	ID      json.RawMessage // raw id token as received (number or string); nil for notifications
	Src     string
	Dst     string
	Tag     string
	Method  string
	Params  json.RawMessage // "params" or legacy "args"; nil when absent
	Auth    *FrameAuth      // in-frame auth, nil when absent
	Channel ChannelInfo
	// User is the authenticated user name, set by the Guard ("" if none).
	User string
}

// Challenge carries the parameters of a digest-auth challenge (401).
type Challenge struct {
	Realm     string
	Nonce     int64  // Unix seconds
	Algorithm string // "MD5" or "SHA-256"
}

// Error is an RPC error reply: {"code":N,"message":"..."}.
type Error struct {
	Code    int
	Message string
	// Challenge is set on 401 errors; channels with native auth (HTTP) turn it
	// into a WWW-Authenticate header, others send it in-band as the message.
	Challenge *Challenge
}

func (e *Error) Error() string { return fmt.Sprintf("rpc error %d: %s", e.Code, e.Message) }

// Errorf returns an *Error with a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrDrop tells the dispatcher to drop a request silently, without a reply
// (the firmware does this when the ACL configuration is broken).
var ErrDrop = errors.New("rpc: request dropped")

// ErrCrashed is returned for a request whose handling crashed the
// firmware (a panic handed to the device's supervisor): there is no reply,
// and channels drop the connection as a rebooting device would.
var ErrCrashed = errors.New("rpc: firmware crashed")

// Handler serves one RPC method. It returns the result as JSON (nil means
// "result":null) or an error; an *Error is sent as is, any other error as 500.
type Handler func(ctx context.Context, req *Request) (json.RawMessage, error)

// Guard decides whether a request may run (authentication and ACL). It may
// set req.User. It returns nil to allow, an *Error to refuse (401 with a
// Challenge, 403, 400, 500) or ErrDrop.
type Guard interface {
	Check(ctx context.Context, req *Request) error
}

// Registrar is where services register their methods (the Dispatcher
// implements it). argsFmt is the firmware's json_scanf format shown by
// RPC.Describe, e.g. "{filename: %Q, offset: %ld, len: %ld}".
type Registrar interface {
	Register(method, argsFmt string, h Handler)
}

// FrameHandler is what every transport (WS, HTTP, UART, MQTT) feeds frames
// into (the Dispatcher implements it).
type FrameHandler interface {
	// HandleFrame parses one frame received on ch, dispatches it and returns
	// the reply frame, or nil when no reply is due (notification, dropped
	// request, incoming response). A non-nil error means the frame was
	// invalid; non-persistent channels then close.
	HandleFrame(ctx context.Context, ch ChannelInfo, frame []byte) ([]byte, error)
}
