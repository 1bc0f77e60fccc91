package emu

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/mqtt"
	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
	"golang.org/x/sys/unix"
)

// End-to-end fuzz targets: arbitrary frames through each channel type of
// one device with digest auth and an ACL on. Every input must leave the
// device uncrashed (no panic reached its supervisor) and answering on the
// same channel; what the input itself got (a reply, an error, a closed
// connection for an invalid frame on WS, nothing for a notification) is
// the firmware's documented behaviour and not asserted here.

// fuzzACL opens the read-mostly methods to everyone (so that the fuzzer
// reaches their argument parsing), FS.Put included, and puts the rest
// behind the user joe, whose password the fuzzer does not know.
const fuzzACL = `[{"method":"FS.Put","acl":"*"},{"method":"FS.Get","acl":"*"},{"method":"FS.List*","acl":"*"},` +
	`{"method":"RPC.*","acl":"*"},{"method":"Sys.GetInfo","acl":"*"},{"method":"Config.Get","acl":"*"},{"method":"*","acl":"+joe"}]`

// fuzzSeeds are frames worth starting from, on every channel.
var fuzzSeeds = []string{
	`{"id":1,"method":"RPC.Ping"}`,
	`{"id":2,"src":"x","method":"FS.Put","params":{"filename":"v","offset":9223372036854775807,"data":"QQ=="}}`,
	`{"id":3,"src":"x","method":"FS.Get","params":{"filename":"v","offset":-1,"len":-5}}`,
	`{"id":4,"src":"x","method":"Config.Set","params":{"config":{"mqtt":{"keep_alive":-1}},"save":true}}`,
	`{"id":5,"src":"#","method":"RPC.Ping"}`,
	`{"id":10,"src":"ok","SRC":"#","method":"RPC.Ping"}`,
	`{"id":6,"method":"Sys.Reboot","auth":{"realm":"fuzz","username":"joe","nonce":1,"cnonce":2,"response":"00"}}`,
	`{"id":7,"method":"RPC.Describe","params":{"name":"FS.Put"}}`,
	`{"id":8,"method":"FS.List","params":{"path":"/\u0000"}}`,
	`{"method":"RPC.Ping"}`,
	`{"id":9,"result":{}}`,
	`[1,2,3]`,
	`{"id":`,
}

// fuzzDevice starts a device with auth and ACL on.
func fuzzDevice(f *testing.F, o Options) *fuzzTarget {
	d, con := startWatched(f, o)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://"+d.HTTPAddr()+"/rpc")
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	for _, step := range []struct {
		method string
		params any
	}{
		{"FS.Put", map[string]any{"filename": "v", "data": base64.StdEncoding.EncodeToString([]byte("an existing file"))}},
		{"FS.Put", map[string]any{"filename": "pw", "data": base64.StdEncoding.EncodeToString([]byte("joe:fuzz:" + md5hex("joe:fuzz:secret") + "\n"))}},
		{"Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"auth_domain": "fuzz", "auth_file": "pw", "acl": fuzzACL}}}},
	} {
		if _, err := c.Call(ctx, step.method, step.params); err != nil {
			f.Fatal(err)
		}
	}
	return &fuzzTarget{d: d, con: con}
}

// fuzzTarget is the device under fuzzing.
type fuzzTarget struct {
	d        *Device
	con      *testkit.SyncBuffer
	reported int64 // crashes already reported
}

// check fails the input when it crashed the device (a crash not reported
// yet: after one, the remaining seeds are judged on their own).
func (ft *fuzzTarget) check(t *testing.T, input []byte) {
	t.Helper()
	if n := ft.d.Crashes(); n != ft.reported {
		ft.reported = n
		t.Fatalf("input %q crashed the device:\n%s", input, tail(ft.con.String(), 4000))
	}
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

var fuzzID atomic.Int64

func nextPing() (int64, []byte) {
	id := fuzzID.Add(1) + 1<<40
	return id, []byte(fmt.Sprintf(`{"id":%d,"method":"RPC.Ping"}`, id))
}

// wsExpect is what the firmware documents for one frame on a WebSocket
// channel: a reply starting with prefix (a request with an id), nothing
// (a notification or a response), or the channel closed (an invalid frame:
// unparsable, too big, or for another dst).
type wsExpect struct {
	closed bool
	prefix []byte // non-nil: a reply with this beginning comes first
}

func expectWS(frame []byte, localID string) wsExpect {
	f, err := rpc.ParseFrame(frame)
	if err != nil || len(frame) > 4096 || (f.Dst != "" && f.Dst != localID) {
		return wsExpect{closed: true}
	}
	if f.Method == "" || len(f.ID) == 0 {
		return wsExpect{}
	}
	r := rpc.Reply(&rpc.Request{ID: f.ID}, localID, nil, nil)
	return wsExpect{prefix: r[:bytes.Index(r, []byte(`,"src":`))+1]}
}

func FuzzWSChannel(f *testing.F) {
	ft := fuzzDevice(f, Options{})
	d := ft.d
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	var ws *websocket.Conn
	redial := func(t *testing.T) {
		if ws != nil {
			ws.Close()
		}
		var err error
		ws, _, err = websocket.DefaultDialer.Dial("ws://"+d.HTTPAddr()+"/rpc", nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if ws == nil {
			redial(t)
		}
		want := expectWS(frame, d.DeviceID())
		ws.WriteMessage(websocket.TextMessage, frame)
		id, ping := nextPing()
		ws.WriteMessage(websocket.TextMessage, ping)
		got, closed := readWS(ws, id)
		ft.check(t, frame)
		switch {
		case want.closed && !closed:
			t.Fatalf("input %q: an invalid frame left the channel open (got %q)", frame, got)
		case !want.closed && closed:
			t.Fatalf("input %q: the channel closed", frame)
		case want.prefix != nil && (len(got) == 0 || !bytes.HasPrefix(got[0], want.prefix)):
			t.Fatalf("input %q: replies %q, want one starting %q first", frame, got, want.prefix)
		case want.prefix == nil && !want.closed && len(got) != 0:
			t.Fatalf("input %q: unexpected replies %q", frame, got)
		}
		if closed {
			redial(t)
			ws.WriteMessage(websocket.TextMessage, ping)
			if _, closed := readWS(ws, id); closed {
				t.Fatalf("input %q: the device no longer answers over WS", frame)
			}
		}
	})
}

// readWS returns the messages received before the reply with id, or
// closed when the channel closed (or stayed silent) first.
func readWS(ws *websocket.Conn, id int64) (got [][]byte, closed bool) {
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer ws.SetReadDeadline(time.Time{})
	want := []byte(fmt.Sprintf(`{"id":%d,`, id))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return got, true
		}
		if bytes.HasPrefix(msg, want) {
			return got, false
		}
		got = append(got, msg)
	}
}

func FuzzHTTPChannel(f *testing.F) {
	ft := fuzzDevice(f, Options{})
	d := ft.d
	for _, s := range fuzzSeeds {
		f.Add("", []byte(s))
	}
	f.Add("FS.Put", []byte(`{"filename":"v","offset":9223372036854775807,"data":"QQ=="}`))
	f.Add("FS.Get", []byte(`{"filename":"\u0000"}`))
	f.Add("Sys.Reboot", []byte(`{}`))
	hc := &http.Client{Timeout: 10 * time.Second}
	f.Fuzz(func(t *testing.T, method string, body []byte) {
		u := "http://" + d.HTTPAddr() + "/rpc"
		if method != "" {
			u += "/" + url.PathEscape(method)
		}
		r, err := hc.Post(u, "application/json", bytes.NewReader(body))
		if err == nil {
			got, _ := io.ReadAll(r.Body)
			r.Body.Close()
			ft.check(t, body)
			if method == "" { // frame mode: the firmware's documented answers
				checkHTTPFrame(t, body, d.DeviceID(), r.StatusCode, got)
			}
		}
		r, err = hc.Post("http://"+d.HTTPAddr()+"/rpc/RPC.Ping", "application/json", nil)
		if err != nil {
			ft.check(t, body)
			t.Fatalf("input %q %q: the device no longer answers over HTTP: %v", method, body, err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Fatalf("input %q %q: RPC.Ping then got %d", method, body, r.StatusCode)
		}
		ft.check(t, body)
	})
}

// checkHTTPFrame checks the answer to a frame POSTed to /rpc: 413 when too
// big, 400 when invalid, a reply (or a native 401 challenge) to a request
// with an id, an empty 200 otherwise.
func checkHTTPFrame(t *testing.T, frame []byte, localID string, code int, body []byte) {
	t.Helper()
	if len(frame) > 4096 {
		if code != 413 {
			t.Fatalf("input %q: %d for an oversized frame", frame, code)
		}
		return
	}
	want := expectWS(frame, localID)
	switch {
	case want.closed:
		if code != 400 {
			t.Fatalf("input %q: %d %q for an invalid frame, want 400", frame, code, body)
		}
	case want.prefix != nil:
		if code != 401 && (code != 200 || !bytes.HasPrefix(body, want.prefix)) {
			t.Fatalf("input %q: %d %q, want a reply starting %q", frame, code, body, want.prefix)
		}
	default:
		if code != 200 || len(bytes.TrimSpace(body)) != 0 {
			t.Fatalf("input %q: %d %q, want an empty 200", frame, code, body)
		}
	}
}

func FuzzUARTChannel(f *testing.F) {
	ft := fuzzDevice(f, Options{Serial: true})
	d := ft.d
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
		f.Add([]byte(`"""` + s + `"""`))
	}
	f.Add([]byte{0x04})
	f.Add([]byte(`"""{"id":1,"method":"RPC.Ping"}00000000"""`))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := client.Dial(ctx, d.SerialPath())
	cancel()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	raw, err := os.OpenFile(d.SerialPath(), os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { raw.Close() })
	f.Fuzz(func(t *testing.T, in []byte) {
		if bytes.IndexByte(in, 0xC0) >= 0 {
			// A SLIP frame may be a ROM loader SYNC: the chip then leaves the
			// firmware for download mode, as documented.
			return
		}
		raw.Write(in)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.Call(ctx, "RPC.Ping", nil); err != nil {
			ft.check(t, in)
			t.Fatalf("input %q: the device no longer answers over the UART: %v", in, err)
		}
		ft.check(t, in)
	})
}

func FuzzMQTTChannel(f *testing.F) {
	b := startBroker(f)
	ft := fuzzDevice(f, Options{MQTTBroker: b.Addr()})
	d := ft.d
	for _, s := range fuzzSeeds {
		f.Add("", []byte(s))
	}
	f.Add("/FS.Put", []byte(`{"id":1,"src":"x","params":{"filename":"v","offset":9223372036854775807,"data":"QQ=="}}`))
	f.Add("/RPC.Ping", []byte(`{"id":1,"src":"+/#"}`))
	deadline := time.Now().Add(15 * time.Second)
	for !d.MQTTConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	id := d.DeviceID()
	m := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("fuzzer"))
	if tok := m.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		f.Fatalf("connect: %v", tok.Error())
	}
	f.Cleanup(func() { m.Disconnect(50) })
	type message struct {
		topic   string
		payload []byte
	}
	msgs := make(chan message, 256)
	m.Subscribe("#", 1, func(_ paho.Client, msg paho.Message) {
		select {
		case msgs <- message{msg.Topic(), msg.Payload()}:
		default:
		}
	}).Wait()
	// await waits for a message on topic starting with prefix.
	await := func(topic string, prefix []byte, timeout <-chan time.Time) bool {
		for {
			select {
			case r := <-msgs:
				if r.topic == topic && bytes.HasPrefix(r.payload, prefix) {
					return true
				}
			case <-timeout:
				return false
			}
		}
	}
	ping := func() []byte {
		pid, _ := nextPing()
		m.Publish(id+"/rpc", 1, false, fmt.Sprintf(`{"id":%d,"src":"fuzzer","method":"RPC.Ping"}`, pid)).WaitTimeout(5 * time.Second)
		return []byte(fmt.Sprintf(`{"id":%d,`, pid))
	}
	// Wait until the device is subscribed: a request published before is lost.
	for deadline := time.Now().Add(15 * time.Second); !await("fuzzer/rpc", ping(), time.After(500*time.Millisecond)); {
		if time.Now().After(deadline) {
			f.Fatal("the device never answered over MQTT")
		}
	}
	f.Fuzz(func(t *testing.T, suffix string, frame []byte) {
		if !mqtt.ValidSrc(id+"/rpc"+suffix) || len(suffix) > 1000 {
			return // not a topic a client can publish to (the broker would drop the fuzzer)
		}
		for len(msgs) > 0 {
			<-msgs
		}
		// A request with an id and a src that can be a topic gets a reply
		// there; anything else is dropped (logged), as documented.
		var replyTopic string
		var replyPrefix []byte
		if fr, err := rpc.ParseFrame(frame); suffix == "" && err == nil && len(frame) <= 4096 && fr.Method != "" &&
			len(fr.ID) > 0 && mqtt.ValidSrc(fr.Src) && (fr.Dst == "" || fr.Dst == id) {
			r := rpc.Reply(&rpc.Request{ID: fr.ID}, id, nil, nil)
			replyTopic, replyPrefix = fr.Src+"/rpc", r[:bytes.Index(r, []byte(`,"src":`))+1]
		}
		m.Publish(id+"/rpc"+suffix, 1, false, frame).WaitTimeout(5 * time.Second)
		timeout := time.After(5 * time.Second)
		if replyTopic != "" && !await(replyTopic, replyPrefix, timeout) {
			ft.check(t, frame)
			t.Fatalf("input %q: no reply on %s", frame, replyTopic)
		}
		if !await("fuzzer/rpc", ping(), timeout) {
			ft.check(t, frame)
			t.Fatalf("input %q %q: the device no longer answers over MQTT", suffix, frame)
		}
		if strings.Contains(ft.con.String(), "MQTT0 Disconnect") {
			t.Fatalf("input %q %q: the broker dropped the device", suffix, frame)
		}
		ft.check(t, frame)
	})
}
