package emu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/mosemu/mosemu/rpc"
)

// TestFSMkdirRmdir makes and removes directories over HTTP RPC on a running
// device, with files in them, and checks what survives a restart.
func TestFSMkdirRmdir(t *testing.T) {
	dir := t.TempDir()
	d := startDevice(t, dir, false)
	c := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	callErr := func(method string, params any) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := c.Call(ctx, method, params)
		var re *rpc.Error
		if !errors.As(err, &re) {
			t.Fatalf("%s: %v, want an RPC error", method, err)
		}
		return re.Code
	}
	call(t, c, "FS.Mkdir", map[string]any{"path": "/www"})
	call(t, c, "FS.Mkdir", map[string]any{"path": "/www/img"})
	call(t, c, "FS.Put", map[string]any{"filename": "/www/index.html", "data": base64.StdEncoding.EncodeToString([]byte("<h1>hi</h1>"))})
	if got := string(call(t, c, "FS.List", map[string]any{"path": "/www"})); got != `["img","index.html"]` {
		t.Fatalf("FS.List /www = %s", got)
	}
	for _, tc := range []struct {
		method string
		params map[string]any
		code   int
	}{
		{"FS.Mkdir", map[string]any{}, 400},
		{"FS.Mkdir", map[string]any{"path": "/www"}, 500},            // exists
		{"FS.Mkdir", map[string]any{"path": "/no/such/parent"}, 500}, // no parent
		{"FS.Rmdir", map[string]any{"path": "/www"}, 500},            // not empty
		{"FS.Rmdir", map[string]any{"path": "/www/index.html"}, 500},
		{"FS.Rmdir", map[string]any{"path": "/nothing"}, 500},
		{"FS.Rmdir", map[string]any{}, 400},
	} {
		if code := callErr(tc.method, tc.params); code != tc.code {
			t.Errorf("%s %v: code %d, want %d", tc.method, tc.params, code, tc.code)
		}
	}
	call(t, c, "FS.Rmdir", map[string]any{"path": "/www/img"})
	d.Close()

	d2 := startDevice(t, dir, false)
	c2 := dial(t, "http://"+d2.HTTPAddr()+"/rpc")
	if got := string(call(t, c2, "FS.List", map[string]any{"path": "/www"})); got != `["index.html"]` {
		t.Fatalf("FS.List /www after restart = %s", got)
	}
	call(t, c2, "FS.Remove", map[string]any{"filename": "/www/index.html"})
	call(t, c2, "FS.Rmdir", map[string]any{"path": "/www"})
	var names []string
	if err := json.Unmarshal(call(t, c2, "FS.List", map[string]any{"path": "/"}), &names); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n == "www" {
			t.Fatalf("/www survived FS.Rmdir: %v", names)
		}
	}
}
