package emu

import (
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strings"
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

// TestBundleFSImageMounts flashes an fs image made with mklfs's littlefs
// geometry (as `mos build` does for a bundle: prog 64, cache 256) into the
// ESP32 fs partition, boots, and reads every file over RPC as listed by
// the reference littlefs (fs/testdata/ref/mklfs.tree).
func TestBundleFSImageMounts(t *testing.T) {
	zf, err := os.Open("../fs/testdata/ref/mklfs.img.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer zf.Close()
	zr, err := gzip.NewReader(zf)
	if err != nil {
		t.Fatal(err)
	}
	img, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := os.ReadFile("../fs/testdata/ref/mklfs.tree")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := startDevice(t, dir, false)
	const fsOffset = 0x190000 // fs_0 of the default ESP32 layout
	if err := d.Flash().Erase(fsOffset, int64(len(img))); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Flash().WriteAt(img, fsOffset); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d2 := startDevice(t, dir, false)
	c := dial(t, "http://"+d2.HTTPAddr()+"/rpc")
	files := 0
	for _, line := range strings.Split(strings.TrimSpace(string(tree)), "\n") {
		f := strings.Fields(line)
		if f[0] != "f" {
			continue
		}
		var r struct{ Data string }
		json.Unmarshal(call(t, c, "FS.Get", map[string]any{"filename": f[1]}), &r)
		b, _ := base64.StdEncoding.DecodeString(r.Data)
		h := fnv.New64a()
		h.Write(b)
		if got := fmt.Sprintf("%d %016x", len(b), h.Sum64()); got != f[2]+" "+f[3] {
			t.Fatalf("%s: %s, want %s %s", f[1], got, f[2], f[3])
		}
		files++
	}
	if files == 0 {
		t.Fatal("no files in the tree")
	}
}
