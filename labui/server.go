// Package labui is the lab console: a web page served by mosemu on a
// host-side address (never on the device's own HTTP server) that shows a
// room what happens inside an emulated device, live over a WebSocket: the
// console log, an RPC trace, the efuses, a flash map that tells plaintext
// from ciphertext, the filesystem, sys_config by level, the ATECC608A's
// slots, the RAM model, the goals of a lab, and buttons to reset, hold in
// download mode, cut the power, snapshot and restore.
//
// The page and the actions accept only requests whose Host is a loopback
// or the listening address and whose Origin (when a browser sends one) is
// the console itself, so another web site cannot drive a seat.
package labui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mosemu/mosemu/emu/observe"
)

//go:embed static
var static embed.FS

// GoalsFunc checks a lab's goals against a target and returns results to
// show (any JSON value).
type GoalsFunc func(ctx context.Context, t Target) (any, error)

// Options configure a Server.
type Options struct {
	// Goals, when set, is run on demand and every GoalsEvery while a page
	// is open, and its results are shown live.
	Goals      GoalsFunc
	GoalsEvery time.Duration
	// LabTitle names the lab shown with the goals.
	LabTitle string
	// Log receives server errors; nil discards them.
	Log *slog.Logger
}

// Server serves the lab console of one or more devices.
type Server struct {
	opts    Options
	srv     *http.Server
	ln      net.Listener
	ctx     context.Context
	stop    context.CancelFunc
	mu      sync.Mutex
	targets map[string]Target
	views   map[string]*view // created when a page first asks for the device
	order   []string
	wg      sync.WaitGroup
}

// New returns a server without devices; Add them, then Serve.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.GoalsEvery == 0 {
		opts.GoalsEvery = 15 * time.Second
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Server{opts: opts, ctx: ctx, stop: stop, targets: map[string]Target{}, views: map[string]*view{}}
}

// Add shows t under name ("" for the only device of `mosemu run`). A
// device costs nothing until a page opens it, so a fleet can add all its
// devices.
func (s *Server) Add(name string, t Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.targets[name]; !dup {
		s.order = append(s.order, name)
	}
	s.targets[name] = t
}

// Listen starts serving on addr (host:port; port 0 picks one) and returns
// the address.
func (s *Server) Listen(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.opts.Log.Handler(), slog.LevelDebug)}
	go s.srv.Serve(ln)
	return ln.Addr().String(), nil
}

// Close stops the server and its goroutines.
func (s *Server) Close() error {
	s.stop()
	var err error
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.srv.Shutdown(ctx)
		err = s.srv.Close()
	}
	s.wg.Wait()
	return err
}

// Handler returns the console's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	files := http.FileServer(http.FS(sub))
	mux.Handle("GET /", files)
	mux.HandleFunc("GET /api/devices", s.devices)
	mux.HandleFunc("GET /api/state", s.state)
	mux.HandleFunc("POST /api/action", s.action)
	mux.HandleFunc("GET /ws", s.ws)
	return s.guard(mux)
}

// guard refuses requests whose Host is not a loopback name or address (DNS
// rebinding) and browser requests from another origin.
func (s *Server) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowedHost(r.Host) {
			http.Error(w, "lab console: unexpected Host header", http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
			http.Error(w, "lab console: requests from another origin are refused", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPost && r.Header.Get("Origin") == "" && r.Header.Get("Sec-Fetch-Site") != "" && r.Header.Get("Sec-Fetch-Site") != "same-origin" {
			http.Error(w, "lab console: cross-site request refused", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

func allowedHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	return net.ParseIP(h) != nil
}

func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
}

func (s *Server) view(r *http.Request) (*view, bool) {
	name := r.URL.Query().Get("dev")
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "" && len(s.order) == 1 {
		name = s.order[0]
	}
	if v, ok := s.views[name]; ok {
		return v, true
	}
	t, ok := s.targets[name]
	if !ok || s.ctx.Err() != nil {
		return nil, false
	}
	v := newView(s, name, t)
	s.views[name] = v
	s.wg.Add(1)
	go func() { defer s.wg.Done(); v.run(s.ctx) }()
	return v, true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) devices(w http.ResponseWriter, _ *http.Request) {
	type dev struct {
		Name     string `json:"name"`
		ID       string `json:"id"`
		HTTPAddr string `json:"http_addr"`
		Running  bool   `json:"running"`
	}
	s.mu.Lock()
	names := append([]string(nil), s.order...)
	targets := make([]Target, len(names))
	for i, n := range names {
		targets[i] = s.targets[n]
	}
	s.mu.Unlock()
	out := []dev{}
	for i, n := range names {
		d := targets[i].Device()
		out = append(out, dev{Name: n, ID: d.DeviceID(), HTTPAddr: d.HTTPAddr(), Running: d.Running()})
	}
	writeJSON(w, 200, out)
}

func (s *Server) state(w http.ResponseWriter, r *http.Request) {
	v, ok := s.view(r)
	if !ok {
		writeJSON(w, 404, map[string]string{"error": "no such device"})
		return
	}
	writeJSON(w, 200, v.fullState())
}

// Action is a request to act on a device.
type Action struct {
	Action string `json:"action"` // reset, download, release, powercut, snapshot, restore, check
	Name   string `json:"name,omitempty"`
}

func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "send application/json"})
		return
	}
	v, ok := s.view(r)
	if !ok {
		writeJSON(w, 404, map[string]string{"error": "no such device"})
		return
	}
	var a Action
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&a); err != nil {
		writeJSON(w, 400, map[string]string{"error": "bad request: " + err.Error()})
		return
	}
	res, err := v.do(r.Context(), a)
	if err != nil {
		writeJSON(w, 409, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, 200, map[string]any{"ok": true, "result": res})
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 16384,
	// The guard has checked Origin already; refuse a missing one too
	// unless the client is not a browser (no Sec-Fetch headers).
	CheckOrigin: func(r *http.Request) bool {
		o := r.Header.Get("Origin")
		return (o == "" && r.Header.Get("Sec-Fetch-Mode") == "") || sameOrigin(o, r.Host)
	},
}

func (s *Server) ws(w http.ResponseWriter, r *http.Request) {
	v, ok := s.view(r)
	if !ok {
		http.Error(w, "no such device", 404)
		return
	}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	v.serveClient(s.ctx, c)
}

// action names
var errUnknownAction = errors.New("unknown action")

// eventHook queues a device's events for its view without blocking the
// device.
type eventHook struct{ ch chan observe.Event }

func (h eventHook) Provides(k observe.Kind) bool { return true }
func (h eventHook) OnEvent(e observe.Event) {
	select {
	case h.ch <- e:
	default: // the view is behind: drop rather than slow the device
	}
}
