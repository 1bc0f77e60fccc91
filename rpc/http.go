package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// Switches are the rpc.* enable flags, read on every request.
type Switches struct {
	Enable     bool // rpc.enable
	HTTPEnable bool // rpc.http_enable
	WSEnable   bool // rpc.ws.enable
}

// HTTPChannel serves /rpc and /rpc/...: WebSocket (subprotocol
// clubby.cesanta.com), POST frames and REST calls, with the firmware's
// exact HTTP responses.
type HTTPChannel struct {
	Handler  *Dispatcher
	Switches func() Switches
	// MaxFrameSize bounds request bodies (rpc.max_frame_size); 0 = 4096.
	MaxFrameSize func() int
	// MaxChannels returns rpc.max_non_persistent_channels: how many WS and
	// HTTP RPC channels may be open at once; nil or <= 0 means no limit.
	// Requests beyond it are refused with 503.
	MaxChannels func() int

	open atomic.Int64 // channels open now
}

var upgrader = websocket.Upgrader{
	CheckOrigin:       func(*http.Request) bool { return true }, // any Origin, as the firmware
	EnableCompression: false,
	ReadBufferSize:    4096,
	WriteBufferSize:   4096,
}

func (h *HTTPChannel) maxBody() int64 {
	if h.MaxFrameSize != nil {
		if n := h.MaxFrameSize(); n > 0 {
			return int64(n)
		}
	}
	return 4096
}

// ServeHTTP implements http.Handler.
func (h *HTTPChannel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := h.Switches()
	if !sw.Enable || !sw.HTTPEnable { // the /rpc endpoint is not registered
		writeRaw(w, r, 404, "text/plain", "Not Found", nil)
		return
	}
	n := h.open.Add(1)
	defer h.open.Add(-1)
	if h.MaxChannels != nil {
		if max := h.MaxChannels(); max > 0 && n > int64(max) {
			writeRaw(w, r, 503, "text/plain", "Too many channels", nil)
			return
		}
	}
	if websocket.IsWebSocketUpgrade(r) {
		if !sw.WSEnable || !sw.Enable {
			writeRaw(w, r, 503, "text/plain", "WS is disabled", nil)
			return
		}
		h.serveWS(w, r)
		return
	}
	ch := ChannelInfo{Type: ChanHTTP, Info: r.RemoteAddr, HTTPAuth: ParseDigestHeader(r)}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody()+1))
	if err != nil || int64(len(body)) > h.maxBody() {
		writeRaw(w, r, 413, "text/plain", "Request too large", nil)
		return
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/rpc"), "/")
	if rest == "" { // frame mode
		reply, err := h.Handler.HandleFrame(r.Context(), ch, body)
		if errors.Is(err, ErrCrashed) {
			panic(http.ErrAbortHandler) // the device is rebooting: the connection drops
		}
		if err != nil {
			writeRaw(w, r, 400, "text/plain", "Invalid request", nil)
			return
		}
		if reply == nil {
			writeRaw(w, r, 200, "application/json", "", nil)
			return
		}
		if c := challengeOf(reply); c != nil {
			writeRaw(w, r, 401, "application/json", "", c)
			return
		}
		writeRaw(w, r, 200, "application/json", string(reply), nil)
		return
	}
	// REST mode: /rpc/<Method>, body = args.
	if r.Method == http.MethodOptions {
		writeRaw(w, r, 200, "application/json", "", nil)
		return
	}
	args := body
	if len(args) == 0 && r.URL.RawQuery != "" {
		args = queryArgs(r.URL.RawQuery)
	}
	id, _ := json.Marshal(rand.Int32())
	req := &Request{ID: id, Method: rest, Params: args, Channel: ch}
	res, rerr := h.Handler.Dispatch(r.Context(), req)
	if errors.Is(rerr, ErrCrashed) {
		panic(http.ErrAbortHandler)
	}
	switch e := rerr.(type) {
	case nil:
		if len(res) == 0 {
			res = json.RawMessage("null")
		}
		writeRaw(w, r, 200, "application/json", string(res), nil)
	case *Error:
		if e.Code == 401 && e.Challenge != nil {
			writeRaw(w, r, 401, "application/json", "", e.Challenge)
			return
		}
		code := 500
		if e.Code == 403 || e.Code == 404 {
			code = e.Code
		}
		if e.Code == 0 {
			code = 200
		}
		body := fmt.Sprintf(`{"code":%d`, e.Code)
		if e.Message != "" {
			body += `,"message":` + quote(e.Message)
		}
		writeRaw(w, r, code, "application/json", body+"}", nil)
	default: // dropped
		writeRaw(w, r, 200, "application/json", "", nil)
	}
}

// challengeOf recognises a 401 reply produced for a Challenge, which the
// HTTP channel turns into a native 401.
func challengeOf(reply []byte) *Challenge {
	var f struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(reply, &f) != nil || f.Error == nil || f.Error.Code != 401 {
		return nil
	}
	var c struct {
		Nonce     int64  `json:"nonce"`
		Realm     string `json:"realm"`
		Algorithm string `json:"algorithm"`
	}
	if json.Unmarshal([]byte(f.Error.Message), &c) != nil {
		return nil
	}
	return &Challenge{Realm: c.Realm, Nonce: c.Nonce, Algorithm: c.Algorithm}
}

// queryArgs builds REST args from a query string with values inserted raw.
func queryArgs(q string) []byte {
	var parts []string
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		k, _ = url.QueryUnescape(k)
		v, _ = url.QueryUnescape(v)
		if k != "" {
			parts = append(parts, quote(k)+":"+v)
		}
	}
	return []byte("{" + strings.Join(parts, ",") + "}")
}

var reasons = map[int]string{200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
	404: "Not Found", 413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}

// writeRaw sends the firmware's exact response bytes over the hijacked
// connection: status line, Content-Type, CORS headers, Content-Length of
// body+2, Connection, then body and CRLF.
func writeRaw(w http.ResponseWriter, r *http.Request, code int, ctype, body string, ch *Challenge) {
	keepAlive := strings.EqualFold(r.Header.Get("Connection"), "keep-alive")
	conn := "close"
	if keepAlive {
		conn = "keep-alive"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", code, reasons[code])
	if ch != nil {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nAccess-Control-Allow-Origin: *\r\nAccess-Control-Allow-Headers: *\r\nContent-Length: 0\r\nConnection: close\r\n")
		fmt.Fprintf(&b, "WWW-Authenticate: Digest qop=\"auth\", realm=\"%s\", nonce=\"%x\", algorithm=%s\r\n\r\n", ch.Realm, ch.Nonce, orMD5(ch.Algorithm))
		keepAlive = false
	} else {
		n := len(body) + 2
		fmt.Fprintf(&b, "Content-Type: %s\r\nAccess-Control-Allow-Origin: *\r\nAccess-Control-Allow-Headers: *\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s\r\n", ctype, n, conn, body)
	}
	hj, ok := w.(http.Hijacker)
	if keepAlive || !ok {
		// Keep-alive (browsers) or no raw connection: the same headers
		// through net/http, which then keeps the connection open.
		hd := w.Header()
		hd["Date"] = nil
		if ch != nil {
			hd.Set("WWW-Authenticate", fmt.Sprintf(`Digest qop="auth", realm="%s", nonce="%x", algorithm=%s`, ch.Realm, ch.Nonce, orMD5(ch.Algorithm)))
		}
		hd.Set("Content-Type", ctype)
		hd.Set("Access-Control-Allow-Origin", "*")
		hd.Set("Access-Control-Allow-Headers", "*")
		hd.Set("Content-Length", strconv.Itoa(len(body)+2))
		w.WriteHeader(code)
		io.WriteString(w, body+"\r\n")
		return
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	rw.WriteString(b.String())
	rw.Flush()
	c.Close()
}

func orMD5(a string) string {
	if a == "" {
		return "MD5"
	}
	return a
}

// serveWS runs one WebSocket RPC channel.
func (h *HTTPChannel) serveWS(w http.ResponseWriter, r *http.Request) {
	hdr := http.Header{}
	if p := r.Header.Get("Sec-WebSocket-Protocol"); p != "" {
		hdr.Set("Sec-WebSocket-Protocol", p) // echoed verbatim, as mongoose does
	}
	c, err := upgrader.Upgrade(w, r, hdr)
	if err != nil {
		return
	}
	defer c.Close()
	c.SetReadLimit(h.maxBody() + 1024)
	ch := ChannelInfo{Type: ChanWS, Info: r.RemoteAddr, HTTPAuth: ParseDigestHeader(r)}
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		reply, err := h.Handler.HandleFrame(r.Context(), ch, msg)
		if err != nil {
			return // invalid frame: non-persistent channel is closed
		}
		if reply != nil {
			if err := c.WriteMessage(websocket.TextMessage, reply); err != nil {
				return
			}
		}
	}
}

// ParseDigestHeader parses an "Authorization: Digest ..." header, or
// returns nil.
func ParseDigestHeader(r *http.Request) *HTTPDigest {
	h := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(h, "Digest ")
	if !ok {
		return nil
	}
	params := map[string]string{}
	for len(rest) > 0 {
		rest = strings.TrimLeft(rest, " ,")
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.TrimSpace(k)
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				break
			}
			params[k], rest = v[1:1+end], v[2+end:]
		} else {
			end := strings.IndexByte(v, ',')
			if end < 0 {
				end = len(v)
			}
			params[k], rest = strings.TrimSpace(v[:end]), v[end:]
		}
	}
	return &HTTPDigest{Method: r.Method, URI: r.RequestURI, Params: params}
}
