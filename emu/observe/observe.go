// Package observe is the seam through which a device reports what happens
// on it (console lines, RPC calls, efuse burns, flash writes) to tools that
// watch it: the lab console, traces, graders. A Hook declares the kinds of
// events it wants, as mochi-mqtt's hooks do, so the device never grows a
// case per tool; the device pays nothing for kinds nobody wants.
package observe

import (
	"strconv"
	"sync"
	"time"
)

// Kind is a kind of event; kinds are bits so that a set fits in one value.
type Kind uint8

// Event kinds.
const (
	Console    Kind = 1 << iota // a console log line
	RPC                         // an RPC request answered (or refused) by the dispatcher
	EfuseBurn                   // bits were burned into the efuses
	FlashWrite                  // flash was programmed or erased
	Lifecycle                   // the device booted, rebooted, stopped, or a lab tool acted on it
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case Console:
		return "console"
	case RPC:
		return "rpc"
	case EfuseBurn:
		return "efuse"
	case FlashWrite:
		return "flash"
	case Lifecycle:
		return "lifecycle"
	}
	return "unknown"
}

// Event is one thing that happened on a device. Only the fields of its Kind
// are set.
type Event struct {
	Kind Kind
	Time time.Time
	// Line is the console line as printed on the UART, without the newline
	// (Console), or what happened (Lifecycle).
	Line string
	// Level is the console line's level: "error", "warn", "info", "debug",
	// "verbose", or "" for lines printed without one (boot ROM, banner).
	Level string
	// Call describes an RPC request (RPC).
	Call *Call
	// Off and Len are the flash range programmed or erased (FlashWrite).
	Off, Len int64
	// Erase is true when the range was erased rather than programmed.
	Erase bool
}

// Call is one RPC request as the dispatcher saw it.
type Call struct {
	Channel string        // rpc.Chan*: "WS_in", "HTTP", "UART", "MQTT"
	Peer    string        // peer address, "UART0", or "" (MQTT)
	Method  string        // as requested
	User    string        // the authenticated user, or ""
	Code    int           // 0 on success, the error code otherwise (401, 403, 404, ...)
	Dropped bool          // the request was dropped without an answer
	Latency time.Duration // from dispatch to result
}

// Auth is the auth result as a trace shows it: "user NAME", "anonymous",
// "401", "403" or "dropped".
func (c *Call) Auth() string {
	switch {
	case c.Dropped:
		return "dropped"
	case c.Code == 401 || c.Code == 403:
		return strconv.Itoa(c.Code)
	case c.User != "":
		return "user " + c.User
	}
	return "anonymous"
}

// Hook receives the events of the kinds it provides for. OnEvent runs on
// the goroutine of the device code that caused the event, sometimes with
// device locks held: it must return quickly and must not call back into
// the device (queue the event and act on it elsewhere).
type Hook interface {
	Provides(k Kind) bool
	OnEvent(e Event)
}

// HookFunc adapts a function and a set of kinds to a Hook.
type HookFunc struct {
	Kinds Kind
	F     func(Event)
}

// Provides implements Hook.
func (h HookFunc) Provides(k Kind) bool { return h.Kinds&k != 0 }

// OnEvent implements Hook.
func (h HookFunc) OnEvent(e Event) { h.F(e) }

// Hub fans events out to hooks. The zero value is ready; safe for
// concurrent use.
type Hub struct {
	mu    sync.RWMutex
	hooks []*entry
	wants Kind
}

type entry struct{ h Hook }

// Add registers h and returns a function that removes it.
func (hub *Hub) Add(h Hook) (remove func()) {
	e := &entry{h}
	hub.mu.Lock()
	hub.hooks = append(hub.hooks, e)
	hub.recount()
	hub.mu.Unlock()
	return func() {
		hub.mu.Lock()
		defer hub.mu.Unlock()
		for i, x := range hub.hooks {
			if x == e {
				hub.hooks = append(hub.hooks[:i:i], hub.hooks[i+1:]...)
				break
			}
		}
		hub.recount()
	}
}

func (hub *Hub) recount() {
	hub.wants = 0
	for _, e := range hub.hooks {
		for k := Console; k <= Lifecycle && k != 0; k <<= 1 {
			if e.h.Provides(k) {
				hub.wants |= k
			}
		}
	}
}

// Wants reports whether any hook provides for k, so that a device can skip
// building events nobody reads.
func (hub *Hub) Wants(k Kind) bool {
	if hub == nil {
		return false
	}
	hub.mu.RLock()
	defer hub.mu.RUnlock()
	return hub.wants&k != 0
}

// Emit delivers e to every hook that provides for its kind. A zero Time is
// set to now.
func (hub *Hub) Emit(e Event) {
	if hub == nil {
		return
	}
	hub.mu.RLock()
	hooks := hub.hooks
	wants := hub.wants
	hub.mu.RUnlock()
	if wants&e.Kind == 0 {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	for _, x := range hooks {
		if x.h.Provides(e.Kind) {
			x.h.OnEvent(e)
		}
	}
}
