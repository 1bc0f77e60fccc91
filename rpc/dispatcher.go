package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/mosemu/mosemu/internal/glob"
)

type registered struct {
	name, argsFmt string
	h             Handler
}

// Dispatcher routes frames to registered handlers as mg_rpc does. It
// implements Registrar and FrameHandler.
type Dispatcher struct {
	// LocalID returns the device's id (device.id): the "src" of replies and
	// the only accepted non-empty "dst".
	LocalID func() string
	// Guard authenticates and authorizes requests; nil allows everything.
	Guard Guard
	// Lockout, when it returns a non-nil error, refuses every request
	// (the firmware answers 418 while a reboot is imminent).
	Lockout func() *Error
	// MaxFrameSize returns rpc.max_frame_size; 0 means no limit.
	MaxFrameSize func() int
	// Log receives the firmware's log lines; must not be nil.
	Log *slog.Logger
	// Trace, when set, is called after every dispatched request with its
	// outcome (nil, ErrDrop, ErrCrashed or an *Error) and how long it took.
	Trace func(req *Request, err error, latency time.Duration)
	// OnPanic, when set, is the device's supervisor: a panic while handling
	// a frame is handed to it (the firmware crashed) and the request gets no
	// reply (ErrCrashed). Without it a panic propagates.
	OnPanic func(where string, v any, stack []byte)

	mu       sync.RWMutex
	handlers []registered // registration order
}

// NewDispatcher returns a dispatcher with the RPC.* core methods.
func NewDispatcher(localID func() string, log *slog.Logger) *Dispatcher {
	d := &Dispatcher{LocalID: localID, Log: log}
	d.Register("RPC.List", "", d.list)
	d.Register("RPC.Describe", "{name: %T}", d.describe)
	d.Register("RPC.Ping", "", func(_ context.Context, req *Request) (json.RawMessage, error) {
		return marshalf(`{"channel_info": %s}`, quote(req.Channel.Info)), nil
	})
	return d
}

// Register adds a handler. Later registrations take precedence (the
// firmware keeps handlers in a list with insert at head).
func (d *Dispatcher) Register(method, argsFmt string, h Handler) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handlers = append(d.handlers, registered{method, argsFmt, h})
}

func (d *Dispatcher) lookup(method string) (registered, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for i := len(d.handlers) - 1; i >= 0; i-- {
		if glob.Match(d.handlers[i].name, method) {
			return d.handlers[i], true
		}
	}
	return registered{}, false
}

func (d *Dispatcher) list(context.Context, *Request) (json.RawMessage, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	names := make([]string, 0, len(d.handlers))
	for i := len(d.handlers) - 1; i >= 0; i-- {
		names = append(names, d.handlers[i].name)
	}
	b, _ := json.Marshal(names)
	return b, nil
}

func (d *Dispatcher) describe(_ context.Context, req *Request) (json.RawMessage, error) {
	var a struct {
		Name string `json:"name"`
	}
	json.Unmarshal(req.Params, &a)
	if a.Name == "" {
		return nil, Errorf(400, "name is required")
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	for i := len(d.handlers) - 1; i >= 0; i-- {
		if d.handlers[i].name == a.Name {
			return marshalf(`{"name": %s, "args_fmt": %s}`, quote(a.Name), quote(d.handlers[i].argsFmt)), nil
		}
	}
	return nil, Errorf(404, "name not found")
}

// recoverPanic is deferred around frame handling: it hands a panic to
// OnPanic and turns the result into ErrCrashed.
func (d *Dispatcher) recoverPanic(where string, err *error) {
	if d.OnPanic == nil {
		return
	}
	if v := recover(); v != nil {
		d.OnPanic(where, v, debug.Stack())
		*err = ErrCrashed
	}
}

// HandleFrame implements FrameHandler.
func (d *Dispatcher) HandleFrame(ctx context.Context, ch ChannelInfo, frame []byte) (reply []byte, err error) {
	defer d.recoverPanic("RPC frame via "+ch.Type, &err)
	if max := d.maxFrame(); max > 0 && len(frame) > max {
		d.Log.Error(fmt.Sprintf("Frame too big (%d > %d)", len(frame), max), "src", "mg_rpc.c:248")
		return nil, ErrInvalidFrame
	}
	f, err := ParseFrame(frame)
	if err != nil {
		d.Log.Error(fmt.Sprintf("%p INVALID FRAME (%d): '%.*s'", d, len(frame), min(len(frame), 100), frame), "src", "mg_rpc.c:437")
		return nil, err
	}
	if f.Dst != "" && f.Dst != d.LocalID() {
		d.Log.Error(fmt.Sprintf("Wrong dst: '%s'", f.Dst), "src", "mg_rpc.c:430")
		return nil, ErrInvalidFrame
	}
	if f.Method == "" {
		if len(f.ID) == 0 {
			d.Log.Error("Response without an ID", "src", "mg_rpc.c:470")
		}
		return nil, nil // a response to a request we did not send
	}
	req := &Request{ID: f.ID, Src: f.Src, Dst: f.Dst, Tag: f.Tag, Method: f.Method, Params: f.Params, Auth: f.Auth, Channel: ch}
	res, rerr := d.Dispatch(ctx, req)
	if errors.Is(rerr, ErrCrashed) {
		return nil, ErrCrashed
	}
	if errors.Is(rerr, ErrDrop) || len(req.ID) == 0 {
		return nil, nil
	}
	var e *Error
	if rerr != nil {
		e = rerr.(*Error)
	}
	return Reply(req, d.LocalID(), res, e), nil
}

func (d *Dispatcher) maxFrame() int {
	if d.MaxFrameSize == nil {
		return 0
	}
	return d.MaxFrameSize()
}

// Dispatch runs one request through the lockout, the guard and its handler.
// The error is nil, ErrDrop, ErrCrashed or an *Error.
func (d *Dispatcher) Dispatch(ctx context.Context, req *Request) (json.RawMessage, error) {
	if d.Trace == nil {
		return d.dispatch(ctx, req)
	}
	start := time.Now()
	res, err := d.dispatch(ctx, req)
	d.Trace(req, err, time.Since(start))
	return res, err
}

func (d *Dispatcher) dispatch(ctx context.Context, req *Request) (_ json.RawMessage, err error) {
	defer d.recoverPanic("RPC "+req.Method, &err)
	if d.Lockout != nil {
		if e := d.Lockout(); e != nil {
			return nil, e
		}
	}
	h, ok := d.lookup(req.Method)
	if !ok {
		d.Log.Error("No handler for "+req.Method, "src", "mg_rpc.c:323")
		return nil, Errorf(404, "No handler for %s", req.Method)
	}
	if d.Guard != nil {
		if err := d.Guard.Check(ctx, req); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return nil, e
			}
			if errors.Is(err, ErrDrop) {
				return nil, ErrDrop
			}
			return nil, &Error{Code: 500, Message: err.Error()}
		}
	}
	line := fmt.Sprintf("%s via %s %s", req.Method, req.Channel.Type, req.Channel.Info)
	if req.User != "" {
		line += " user " + req.User
	}
	d.Log.Info(line, "src", "mg_rpc.c:312")
	res, err := h.h(ctx, req)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, &Error{Code: 500, Message: err.Error()}
	}
	return res, nil
}

func marshalf(format string, args ...any) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(format, args...))
}

// quote renders s as a JSON string without HTML escaping.
func quote(s string) string {
	var b bytes.Buffer
	writeJSONString(&b, s)
	return b.String()
}
