package labui

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mosemu/mosemu/emu/observe"
	"github.com/mosemu/mosemu/emu/snapshot"
)

// Ring buffer sizes: what a page opened late still sees.
const (
	keepConsole = 1000
	keepRPC     = 300
	keepEvents  = 100
)

// Message is what the console page receives over the WebSocket.
type Message struct {
	T       string      `json:"t"` // hello, console, rpc, event, state, goals
	Time    time.Time   `json:"time,omitzero"`
	Line    string      `json:"line,omitempty"`
	Level   string      `json:"level,omitempty"` // console lines: error, warn, info, debug, verbose
	Call    *CallView   `json:"call,omitempty"`
	Console []Message   `json:"console,omitempty"`
	RPC     []Message   `json:"rpc,omitempty"`
	Events  []Message   `json:"events,omitempty"`
	State   *FullState  `json:"state,omitempty"`
	Goals   *GoalsState `json:"goals,omitempty"`
}

// CallView is one line of the RPC trace.
type CallView struct {
	Channel   string  `json:"channel"`
	Peer      string  `json:"peer"`
	Method    string  `json:"method"`
	Auth      string  `json:"auth"`
	Code      int     `json:"code"`
	LatencyMS float64 `json:"latency_ms"`
}

// FullState is the device state plus the seat's snapshots.
type FullState struct {
	State
	Snapshots []snapshot.Info `json:"snapshots"`
	Lab       string          `json:"lab,omitempty"`
}

// GoalsState is the last result of a lab's goals.
type GoalsState struct {
	Checked time.Time `json:"checked"`
	Results any       `json:"results,omitempty"`
	Error   string    `json:"error,omitempty"`
	Running bool      `json:"running,omitempty"`
}

type client struct {
	out chan []byte
}

// view is one device's page state: recent events and connected pages.
type view struct {
	s      *Server
	name   string
	target Target
	events chan observe.Event

	mu      sync.Mutex
	console []Message
	rpc     []Message
	other   []Message
	clients map[*client]bool
	goals   *GoalsState
	dirty   bool
	kick    chan struct{}
	checkMu sync.Mutex
	remove  func()    // detaches the view from the hub
	seen    time.Time // events up to this instant came from the backlog
	efuses  map[string]string
}

// efuseDiff describes what changed in the efuses since the last call
// (": FLASH_CRYPT_CNT 0x00 -> 0x01, BLOCK1 blank -> burnt").
func (v *view) efuseDiff() string {
	ef := v.target.Device().Efuses()
	if ef == nil {
		return ""
	}
	cur := map[string]string{}
	var order []string
	ev := inspectEfuses(ef)
	for _, f := range ev.Fields {
		cur[f.Name] = f.Value
		order = append(order, f.Name)
	}
	for _, b := range ev.Blocks {
		cur[b.Name] = b.State
		order = append(order, b.Name)
	}
	prev := v.efuses
	v.efuses = cur
	if prev == nil {
		return ""
	}
	var changes []string
	for _, n := range order {
		if prev[n] != cur[n] {
			changes = append(changes, fmt.Sprintf("%s %s -> %s", n, prev[n], cur[n]))
		}
	}
	if len(changes) == 0 {
		return ""
	}
	return ": " + strings.Join(changes, ", ")
}

// newView attaches a view to t's events, after what t remembers of
// earlier ones (a Seat's backlog).
func newView(s *Server, name string, t Target) *view {
	v := &view{s: s, name: name, target: t, events: make(chan observe.Event, 4096),
		clients: map[*client]bool{}, kick: make(chan struct{}, 1), dirty: true}
	v.efuseDiff() // the baseline
	v.remove = t.Hub().Add(eventHook{v.events})
	if b, ok := t.(interface{ Backlog() []observe.Event }); ok {
		for _, e := range b.Backlog() {
			v.record(e)
			v.seen = e.Time
		}
	}
	return v
}

func appendRing(r []Message, m Message, n int) []Message {
	if len(r) >= n {
		r = append(r[:0:0], r[len(r)-n+1:]...)
	}
	return append(r, m)
}

func (v *view) run(ctx context.Context) {
	defer v.remove()
	tick := time.NewTicker(700 * time.Millisecond)
	defer tick.Stop()
	lastFull := time.Time{}
	lastGoals := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-v.events:
			if e.Time.After(v.seen) { // not already taken from the backlog
				v.record(e)
			}
		case <-v.kick:
			v.pushState()
			lastFull = time.Now()
		case <-tick.C:
			v.mu.Lock()
			n, dirty := len(v.clients), v.dirty
			v.mu.Unlock()
			if n == 0 {
				continue
			}
			if dirty || time.Since(lastFull) > 3*time.Second {
				v.pushState()
				lastFull = time.Now()
			}
			if v.s.opts.Goals != nil && time.Since(lastGoals) > v.s.opts.GoalsEvery {
				lastGoals = time.Now()
				go v.checkGoals(ctx)
			}
		}
	}
}

// record files an event and forwards it to the open pages.
func (v *view) record(e observe.Event) {
	var m Message
	switch e.Kind {
	case observe.Console:
		m = Message{T: "console", Time: e.Time, Line: e.Line, Level: e.Level}
	case observe.RPC:
		c := e.Call
		m = Message{T: "rpc", Time: e.Time, Call: &CallView{Channel: c.Channel, Peer: c.Peer, Method: c.Method,
			Auth: c.Auth(), Code: c.Code, LatencyMS: float64(c.Latency.Microseconds()) / 1000}}
	case observe.EfuseBurn:
		m = Message{T: "event", Time: e.Time, Line: "efuse burn" + v.efuseDiff()}
	case observe.FlashWrite:
		v.mu.Lock()
		v.dirty = true
		v.mu.Unlock()
		return // too many to list: the map shows them
	case observe.Lifecycle:
		m = Message{T: "event", Time: e.Time, Line: e.Line}
	default:
		return
	}
	v.mu.Lock()
	switch m.T {
	case "console":
		v.console = appendRing(v.console, m, keepConsole)
	case "rpc":
		v.rpc = appendRing(v.rpc, m, keepRPC)
	default:
		v.other = appendRing(v.other, m, keepEvents)
		v.dirty = true
	}
	v.mu.Unlock()
	v.broadcast(m)
}

func (v *view) broadcast(m Message) {
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for c := range v.clients {
		select {
		case c.out <- b:
		default: // a page that cannot keep up is dropped; it reconnects
			close(c.out)
			delete(v.clients, c)
		}
	}
}

func (v *view) fullState() *FullState {
	fs := &FullState{State: Inspect(v.name, v.target.Device()), Lab: v.s.opts.LabTitle}
	fs.Snapshots, _ = v.target.Snapshots()
	if fs.Snapshots == nil {
		fs.Snapshots = []snapshot.Info{}
	}
	return fs
}

func (v *view) pushState() {
	v.mu.Lock()
	v.dirty = false
	v.mu.Unlock()
	v.broadcast(Message{T: "state", State: v.fullState()})
}

func (v *view) refresh() {
	v.mu.Lock()
	v.dirty = true
	v.mu.Unlock()
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

func (v *view) checkGoals(ctx context.Context) *GoalsState {
	if v.s.opts.Goals == nil {
		return nil
	}
	if !v.checkMu.TryLock() {
		return nil // a check is under way
	}
	defer v.checkMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	v.broadcast(Message{T: "goals", Goals: &GoalsState{Running: true}})
	res, err := v.s.opts.Goals(ctx, v.target)
	g := &GoalsState{Checked: time.Now(), Results: res}
	if err != nil {
		g.Error = err.Error()
	}
	v.mu.Lock()
	v.goals = g
	v.mu.Unlock()
	v.broadcast(Message{T: "goals", Goals: g})
	return g
}

// do runs an action from the page.
func (v *view) do(ctx context.Context, a Action) (any, error) {
	defer v.refresh()
	switch a.Action {
	case "reset":
		return nil, v.target.Reset()
	case "download":
		return nil, v.target.HoldDownload(true)
	case "release":
		return nil, v.target.HoldDownload(false)
	case "powercut":
		return nil, v.target.PowerCut()
	case "snapshot":
		if err := snapshot.CheckName(a.Name); err != nil {
			return nil, err
		}
		return v.target.Snapshot(a.Name)
	case "restore":
		if err := snapshot.CheckName(a.Name); err != nil {
			return nil, err
		}
		return nil, v.target.Restore(a.Name)
	case "check":
		if v.s.opts.Goals == nil {
			return nil, fmt.Errorf("no lab loaded: start the console with mosemu run --lab LAB")
		}
		g := v.checkGoals(ctx)
		if g == nil {
			return nil, fmt.Errorf("a check is already running")
		}
		return g, nil
	}
	return nil, fmt.Errorf("%w %q", errUnknownAction, a.Action)
}

// serveClient streams events to one page until it goes away.
func (v *view) serveClient(ctx context.Context, conn *websocket.Conn) {
	defer conn.Close()
	c := &client{out: make(chan []byte, 512)}
	v.mu.Lock()
	hello := Message{T: "hello", Line: v.name, Console: append([]Message(nil), v.console...),
		RPC: append([]Message(nil), v.rpc...), Events: append([]Message(nil), v.other...)}
	goals := v.goals
	v.clients[c] = true
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		if v.clients[c] {
			delete(v.clients, c)
			close(c.out)
		}
		v.mu.Unlock()
	}()
	send := func(m Message) error {
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return conn.WriteJSON(m)
	}
	if send(hello) != nil || send(Message{T: "state", State: v.fullState()}) != nil {
		return
	}
	if goals != nil {
		send(Message{T: "goals", Goals: goals})
	} else if v.s.opts.Goals != nil {
		go v.checkGoals(ctx)
	}
	closed := make(chan struct{})
	go func() { // reads only to notice the page going away
		defer close(closed)
		conn.SetReadLimit(1024)
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-closed:
			return
		case b, ok := <-c.out:
			if !ok {
				return
			}
			conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if conn.WriteMessage(websocket.TextMessage, b) != nil {
				return
			}
		}
	}
}
