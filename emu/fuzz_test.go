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
	"github.com/mosemu/mosemu/mqtt"
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
	con      *consoleBuf
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
		ws.WriteMessage(websocket.TextMessage, frame)
		id, ping := nextPing()
		for attempt := 0; ; attempt++ {
			if err := ws.WriteMessage(websocket.TextMessage, ping); err == nil && awaitWS(ws, id) {
				break
			}
			if attempt == 1 { // closed after an invalid frame: a new channel must work
				ft.check(t, frame)
				t.Fatalf("input %q: the device no longer answers over WS", frame)
			}
			redial(t)
		}
		ft.check(t, frame)
	})
}

// awaitWS reads replies until the one with id; false when the channel
// closed or stayed silent.
func awaitWS(ws *websocket.Conn, id int64) bool {
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer ws.SetReadDeadline(time.Time{})
	want := []byte(fmt.Sprintf(`"id":%d`, id))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return false
		}
		if bytes.Contains(msg, want) {
			return true
		}
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
		if r, err := hc.Post(u, "application/json", bytes.NewReader(body)); err == nil {
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		r, err := hc.Post("http://"+d.HTTPAddr()+"/rpc/RPC.Ping", "application/json", nil)
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
	replies := make(chan []byte, 64)
	m.Subscribe("fuzzer/rpc", 1, func(_ paho.Client, msg paho.Message) {
		select {
		case replies <- msg.Payload():
		default:
		}
	}).Wait()
	f.Fuzz(func(t *testing.T, suffix string, frame []byte) {
		if !mqtt.ValidSrc(id+"/rpc"+suffix) || len(suffix) > 1000 {
			return // not a topic a client can publish to (the broker would drop the fuzzer)
		}
		m.Publish(id+"/rpc"+suffix, 1, false, frame).WaitTimeout(5 * time.Second)
		pid, _ := nextPing()
		m.Publish(id+"/rpc", 1, false, fmt.Sprintf(`{"id":%d,"src":"fuzzer","method":"RPC.Ping"}`, pid)).WaitTimeout(5 * time.Second)
		want := []byte(fmt.Sprintf(`"id":%d`, pid))
		timeout := time.After(5 * time.Second)
		for got := false; !got; {
			select {
			case r := <-replies:
				got = bytes.Contains(r, want)
			case <-timeout:
				ft.check(t, frame)
				t.Fatalf("input %q %q: the device no longer answers over MQTT", suffix, frame)
			}
		}
		if strings.Contains(ft.con.String(), "MQTT0 Disconnect") {
			t.Fatalf("input %q %q: the broker dropped the device", suffix, frame)
		}
		ft.check(t, frame)
	})
}
