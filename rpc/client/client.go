// Package client is a Go RPC client for Mongoose OS devices (and mosemu)
// speaking the same wire formats as the mos tool: WebSocket (ws://,
// wss://), HTTP POST (http://, https://) and serial (a path or serial://),
// with digest authentication retried as mos does.
package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/mosemu/mosemu/internal/digest"
	"github.com/mosemu/mosemu/rpc"
)

// transport moves one request frame and returns the matching reply frame.
type transport interface {
	roundTrip(ctx context.Context, frame []byte, id int64) ([]byte, error)
	Close() error
}

// Client calls methods on one device.
type Client struct {
	t    transport
	user string
	pass string
}

// Option configures Dial.
type Option func(*options)

type options struct {
	user, pass string
	tls        *tls.Config
}

// WithCredentials sets the user and password for digest authentication
// (mos --rpc-creds user:pass).
func WithCredentials(user, pass string) Option {
	return func(o *options) { o.user, o.pass = user, pass }
}

// WithTLS sets the TLS config for wss:// and https://.
func WithTLS(c *tls.Config) Option { return func(o *options) { o.tls = c } }

// Dial connects to url: ws://host/rpc, http://host/rpc, /dev/pts/N or
// serial:///dev/pts/N.
func Dial(ctx context.Context, url string, opts ...Option) (*Client, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	tc := o.tls
	if tc == nil {
		tc = &tls.Config{InsecureSkipVerify: true} // as mos without --ca-cert-file
	}
	c := &Client{user: o.user, pass: o.pass}
	var err error
	switch {
	case strings.HasPrefix(url, "ws://"), strings.HasPrefix(url, "wss://"):
		c.t, err = dialWS(ctx, url, tc)
	case strings.HasPrefix(url, "http://"), strings.HasPrefix(url, "https://"):
		c.t = newHTTP(url, tc, c)
	case strings.HasPrefix(url, "serial://"), strings.HasPrefix(url, "/"):
		c.t, err = dialSerial(strings.TrimPrefix(url, "serial://"))
	default:
		return nil, fmt.Errorf("client: unsupported address %q", url)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.t.Close() }

// frame is what mos sends.
type frame struct {
	Src    string          `json:"src,omitempty"`
	ID     int64           `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
	Auth   *rpc.FrameAuth  `json:"auth,omitempty"`
}

type reply struct {
	ID     int64           `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func newID() int64 {
	var b [8]byte
	rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:])%(1<<40)) | 1<<40
}

// Call invokes method with params (nil, a json.RawMessage or any value
// encodable as JSON). A device error reply is returned as *rpc.Error.
func (c *Client) Call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	var p json.RawMessage
	switch v := params.(type) {
	case nil:
	case json.RawMessage:
		p = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		p = b
	}
	f := frame{Src: "mos", ID: newID(), Method: method, Params: p}
	r, err := c.do(ctx, &f)
	if err != nil {
		return nil, err
	}
	if r.Error != nil && r.Error.Code == 401 && c.user != "" {
		var ch struct {
			AuthType  string `json:"auth_type"`
			Nonce     int64  `json:"nonce"`
			Realm     string `json:"realm"`
			Algorithm string `json:"algorithm"`
		}
		if json.Unmarshal([]byte(r.Error.Message), &ch) == nil && ch.AuthType == "digest" {
			f.Auth = FrameDigest(ch.Realm, c.user, c.pass, ch.Nonce, ch.Algorithm)
			if r, err = c.do(ctx, &f); err != nil {
				return nil, err
			}
		}
	}
	if r.Error != nil && r.Error.Code != 0 {
		return nil, &rpc.Error{Code: r.Error.Code, Message: r.Error.Message}
	}
	if r.Result == nil {
		return json.RawMessage("null"), nil
	}
	return r.Result, nil
}

func (c *Client) do(ctx context.Context, f *frame) (*reply, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	raw, err := c.t.roundTrip(ctx, b, f.ID)
	if err != nil {
		return nil, err
	}
	var r reply
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("client: bad reply %q: %w", raw, err)
	}
	return &r, nil
}

var (
	hasher = digest.Hasher
	hexsum = digest.Hex
)

// FrameDigest computes the in-frame auth object mos sends after an
// in-band 401 (HA2 over "dummy_method:dummy_uri", nc 1, qop auth).
func FrameDigest(realm, user, pass string, nonce int64, algo string) *rpc.FrameAuth {
	h := hasher(algo)
	var cb [4]byte
	rand.Read(cb[:])
	cnonce := int64(binary.LittleEndian.Uint32(cb[:]) % 0xffffffff)
	ha1 := hexsum(h, user+":"+realm+":"+pass)
	ha2 := hexsum(h, "dummy_method:dummy_uri")
	resp := hexsum(h, fmt.Sprintf("%s:%d:1:%d:auth:%s", ha1, nonce, cnonce, ha2))
	a := &rpc.FrameAuth{Realm: realm, Username: user, Nonce: json.Number(fmt.Sprint(nonce)),
		CNonce: json.Number(fmt.Sprint(cnonce)), Response: resp}
	if algo != "" && algo != "MD5" {
		a.Algorithm = algo
	}
	return a
}

// ErrTimeout is returned when the device does not answer in time.
var ErrTimeout = errors.New("client: timed out waiting for a reply")
