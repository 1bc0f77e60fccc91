package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/mosemu/mosemu/internal/golden"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/spf13/afero"
)

func newTestDispatcher() *Dispatcher {
	d := NewDispatcher(func() string { return "esp32_A1B2C3" }, slog.New(slog.DiscardHandler))
	RegisterFS(d, afero.NewMemMapFs(), d.Log)
	d.Register("Test.Echo", "", func(_ context.Context, r *Request) (json.RawMessage, error) { return r.Params, nil })
	d.Register("Test.Fail", "", func(context.Context, *Request) (json.RawMessage, error) {
		return nil, Errorf(400, "bad <thing> & more")
	})
	d.Register("Test.Code0", "", func(context.Context, *Request) (json.RawMessage, error) { return nil, &Error{Code: 0} })
	return d
}

func TestFrames(t *testing.T) {
	d := newTestDispatcher()
	ch := ChannelInfo{Type: ChanWS, Info: "127.0.0.1:5000"}
	tests := []struct{ name, in string }{
		{"mos-request", `{"src":"mos","id":1386428395371,"method":"RPC.Ping"}` + "\n"},
		{"string-digits-id", `{"src":"mos","id":"123","method":"Test.Echo","params":{"a":1}}`},
		{"string-id", `{"id":"abc","method":"Test.Echo","args":[1, 2]}`},
		{"tag-and-dst", `{"id":7,"src":"x","dst":"esp32_A1B2C3","tag":"t1","method":"Test.Echo"}`},
		{"case-insensitive", `{"id":8,"method":"test.echo","params":"s"}`},
		{"no-handler", `{"id":9,"src":"mos","method":"Foo.Bar"}`},
		{"error-message", `{"id":10,"method":"Test.Fail"}`},
		{"error-code-0", `{"id":11,"method":"Test.Code0"}`},
		{"describe", `{"id":12,"method":"RPC.Describe","params":{"name":"FS.Get"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := d.HandleFrame(context.Background(), ch, []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, "frame-"+tt.name+".json", out)
		})
	}
	for _, bad := range []string{`{}`, `not json`, `[1]`, `{"id":{},"method":"x"}`, `{"id":1,"dst":"other","method":"RPC.Ping"}`} {
		if _, err := d.HandleFrame(context.Background(), ch, []byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	// Notification: no reply; response frames: dropped.
	for _, quiet := range []string{`{"method":"RPC.Ping"}`, `{"id":5,"result":1}`} {
		if out, err := d.HandleFrame(context.Background(), ch, []byte(quiet)); out != nil || err != nil {
			t.Errorf("%s: %q %v", quiet, out, err)
		}
	}
}

// rawHTTP sends a request on a raw TCP connection and returns the exact
// response bytes.
func rawHTTP(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, req)
	b, _ := io.ReadAll(bufio.NewReader(c))
	return string(b)
}

func TestHTTPExactBytes(t *testing.T) {
	d := newTestDispatcher()
	srv := httptest.NewServer(&HTTPChannel{Handler: d, Switches: func() Switches { return Switches{true, true, true} }})
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	body := `{"id":1,"method":"Test.Echo","params":{"x":1}}`
	tests := []struct{ name, req string }{
		{"post-frame", fmt.Sprintf("POST /rpc HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)},
		{"rest-get-query", "GET /rpc/Test.Echo?a=1&s=%22x%22 HTTP/1.1\r\nHost: d\r\n\r\n"},
		{"rest-404", "POST /rpc/Foo.Bar HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"},
		{"rest-400-is-500", "POST /rpc/Test.Fail HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"},
		{"options", "OPTIONS /rpc/Test.Echo HTTP/1.1\r\nHost: d\r\n\r\n"},
		{"invalid-frame", "POST /rpc HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			golden.Check(t, "http-"+tt.name+".txt", []byte(rawHTTP(t, addr, tt.req)))
		})
	}
}

func TestUARTStream(t *testing.T) {
	d := newTestDispatcher()
	out := &testkit.SyncBuffer{}
	u := &UARTChannel{Out: out, Handler: d, Log: d.Log, Info: "UART0"}
	defer u.Close()
	u.Feed([]byte("\"\"\"\x04\"\"\"\n\n"))
	u.Feed([]byte(`"""`))
	frame := `{"src":"mos","id":1386428395371,"method":"RPC.Ping"}`
	u.Feed([]byte(fmt.Sprintf("\n\"\"\"%s%08x\"\"\"\n", frame, crc32.ChecksumIEEE([]byte(frame)))))
	// A corrupted CRC is dropped, garbage resets the buffer.
	u.Feed([]byte(fmt.Sprintf("\n\"\"\"%s%08x\"\"\"\n", frame, 0)))
	u.Feed([]byte("{\xff\"\"\""))
	for i := 0; i < 200 && !strings.Contains(out.String(), "UART0"); i++ {
		waitShort()
	}
	golden.Check(t, "uart-session.txt", []byte(out.String()))
}

func FuzzParseFrame(f *testing.F) {
	f.Add([]byte(`{"src":"mos","id":1,"method":"RPC.List","params":{}}`))
	f.Add([]byte(`{"id":"x","auth":{"nonce":1}}`))
	d := newTestDispatcher()
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseFrame(b)
		if err == nil && fr == nil {
			t.Fatal("nil frame without error")
		}
		d.HandleFrame(context.Background(), ChannelInfo{Type: ChanUART}, b)
	})
}

func FuzzUARTFeed(f *testing.F) {
	f.Add([]byte("\"\"\"\x04\"\"\"\n\n\"\"\"{\"id\":1,\"method\":\"RPC.Ping\"}00000000\"\"\""))
	f.Fuzz(func(t *testing.T, b []byte) {
		u := &UARTChannel{Out: io.Discard, Handler: newTestDispatcher(), Log: slog.New(slog.DiscardHandler), Info: "UART0"}
		for len(b) > 0 {
			n := min(len(b), 7)
			u.Feed(b[:n])
			b = b[n:]
		}
		u.Close()
	})
}
