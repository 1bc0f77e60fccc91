package emu

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/observe"
	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
)

// recorder is a hook keeping every event.
type recorder struct {
	mu     sync.Mutex
	events []observe.Event
}

func (r *recorder) Provides(observe.Kind) bool { return true }
func (r *recorder) OnEvent(e observe.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) find(f func(observe.Event) bool) (observe.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if f(e) {
			return e, true
		}
	}
	return observe.Event{}, false
}

// TestObservationSeam checks that a hook sees console lines, RPC calls with
// their channel, peer and auth result, flash writes and efuse burns.
func TestObservationSeam(t *testing.T) {
	rec := &recorder{}
	hub := &observe.Hub{}
	hub.Add(rec)
	d := startWith(t, Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 7, Hub: hub})
	if _, ok := rec.find(func(e observe.Event) bool {
		return e.Kind == observe.Console && strings.Contains(e.Line, "Mongoose OS")
	}); !ok {
		t.Error("no console event for the boot banner")
	}
	if _, ok := rec.find(func(e observe.Event) bool { return e.Kind == observe.FlashWrite && !e.Erase }); !ok {
		t.Error("no flash write event for the factory image")
	}
	resp, err := http.Get("http://" + d.HTTPAddr() + "/rpc/Sys.GetInfo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e, ok := rec.find(func(e observe.Event) bool { return e.Kind == observe.RPC && e.Call.Method == "Sys.GetInfo" })
	if !ok {
		t.Fatal("no RPC event for Sys.GetInfo")
	}
	if e.Call.Channel != rpc.ChanHTTP || !strings.HasPrefix(e.Call.Peer, "127.0.0.1:") || e.Call.Code != 0 || e.Call.Auth() != "anonymous" || e.Call.Latency <= 0 {
		t.Errorf("RPC event %+v (auth %s)", *e.Call, e.Call.Auth())
	}

	// A refused call is traced with its code.
	ws := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, ws, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"acl": `[{"method":"FS.*","acl":"-*"}]`}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://"+d.HTTPAddr()+"/rpc")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var re *rpc.Error
	if _, err := c.Call(ctx, "FS.List", nil); !errors.As(err, &re) {
		t.Fatalf("FS.List: %v", err)
	}
	e, ok = rec.find(func(e observe.Event) bool { return e.Kind == observe.RPC && e.Call.Method == "FS.List" })
	if !ok || e.Call.Code != re.Code || e.Call.Channel != rpc.ChanWS {
		t.Errorf("refused FS.List traced as %+v, ok %v (code %d)", e.Call, ok, re.Code)
	}

	if err := d.Efuses().Burn("JTAG_DISABLE", 1); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.find(func(e observe.Event) bool { return e.Kind == observe.EfuseBurn }); !ok {
		t.Error("no efuse burn event")
	}
}
