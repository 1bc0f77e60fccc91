package lab

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/atca"
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/rpc/client"
	"github.com/spf13/afero"
)

func TestMalformedLabFiles(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown field", "title: x\ngoals:\n  - name: a\n    rpc: {method: A, expect: ok, chanel: ws}\n", "x.yaml:4: chanel: unknown field"},
		{"bad expect", "title: x\ngoals:\n  - name: a\n    rpc:\n      method: A\n      expect: maybe\n", "x.yaml:6: goals[0].rpc.expect"},
		{"bad genkey", "title: x\ndevice:\n  atca:\n    genkey: [16]\ngoals:\n  - name: a\n    file: {path: a}\n", "x.yaml:4: device.atca.genkey"},
		{"bad arch", "title: x\ndevice:\n  arch: esp33\ngoals:\n  - name: a\n    file: {path: a}\n", "x.yaml:3: device.arch"},
		{"two checks", "title: x\ngoals:\n  - name: a\n    file: {path: a}\n    config: {key: b}\n", "x.yaml:3: goals[0].: a goal has exactly one check"},
		{"syntax", "title: x\ngoals: [\n", "x.yaml:2: did not find expected node content"},
		{"no title", "goals:\n  - name: a\n    file: {path: a}\n", "title: a lab needs a title"},
		{"wrong type", "title: x\ngoals:\n  - name: a\n    ram: {connections: many}\n", "x.yaml:4:"},
	}
	for _, tt := range tests {
		_, err := Parse("x.yaml", []byte(tt.yaml))
		var le *Error
		if !errors.As(err, &le) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"title: x\ngoals:\n  - name: a\n    file: {path: a}\n", "goals: [", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := Parse("fuzz.yaml", b)
		if err == nil && (l.Title == "" || len(l.Goals) == 0) {
			t.Fatal("accepted a lab without title or goals")
		}
	})
}

// solve starts the lab's device from dir as `mosemu run` would, lets fix
// act on it, and stops it.
func solve(t *testing.T, dir string, opts emu.Options, fix func(d *emu.Device, c *client.Client)) {
	t.Helper()
	opts.StateDir, opts.HTTPAddr = dir, "127.0.0.1:0"
	d, err := emu.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var c *client.Client
	if d.HTTPAddr() != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err = client.Dial(ctx, "ws://"+d.HTTPAddr()+"/rpc"); err == nil {
			defer c.Close()
		}
	}
	fix(d, c)
}

func call(t *testing.T, c *client.Client, method string, params any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, method, params); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
}

// TestShippedLabs works through every shipped lab: start, goals not met,
// the documented solution, goals met.
func TestShippedLabs(t *testing.T) {
	if testing.Short() {
		t.Skip("boots several devices")
	}
	put := func(t *testing.T, c *client.Client, name, data string) {
		call(t, c, "FS.Put", map[string]any{"filename": name, "data": base64.StdEncoding.EncodeToString([]byte(data))})
	}
	setConfig := func(t *testing.T, c *client.Client, cfg map[string]any) {
		call(t, c, "Config.Set", map[string]any{"config": cfg, "save": true})
	}
	labs := map[string]struct {
		opts emu.Options
		fix  func(t *testing.T, d *emu.Device, c *client.Client)
	}{
		"lock-rpc.yaml": {fix: func(t *testing.T, d *emu.Device, c *client.Client) {
			h := md5.Sum([]byte("joe:myproduct:secret"))
			put(t, c, "rpc_auth.txt", "joe:myproduct:"+hex.EncodeToString(h[:])+"\n")
			put(t, c, "rpc_acl.json", `[{"method":"Sys.GetInfo","acl":"*"},{"method":"FS.*","acl":"+joe"},{"method":"*","acl":"-*"}]`)
			setConfig(t, c, map[string]any{"rpc": map[string]any{"auth_domain": "myproduct", "auth_file": "rpc_auth.txt", "acl_file": "rpc_acl.json"}})
		}},
		"flash-encryption.yaml": {opts: emu.Options{FlashEncryption: true}, fix: func(t *testing.T, d *emu.Device, c *client.Client) {
			// As mosemu run --flash-encryption does on an existing device.
			if err := d.SetBootloaderFlashEncryption(true); err != nil {
				t.Fatal(err)
			}
			if err := d.Reboot(); err != nil {
				t.Fatal(err)
			}
		}},
		"mutual-tls.yaml": {fix: func(t *testing.T, d *emu.Device, c *client.Client) {
			setConfig(t, wss(t, d), map[string]any{"http": map[string]any{"ssl_ca_cert": "ca.pem"}})
		}},
		"atca-tls-key.yaml": {fix: func(t *testing.T, d *emu.Device, _ *client.Client) {
			c := wss(t, d)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := c.Call(ctx, "ATCA.GetConfig", nil)
			if err != nil {
				t.Fatal(err)
			}
			var gc struct{ Config []byte }
			json.Unmarshal(res, &gc)
			cfg := gc.Config // slot 0: ECC private key written encrypted with the slot 4 key
			binary.LittleEndian.PutUint16(cfg[20:], 0x6481)
			binary.LittleEndian.PutUint16(cfg[96:], 0x0033)
			binary.LittleEndian.PutUint16(cfg[28:], 0x8F8F)
			binary.LittleEndian.PutUint16(cfg[104:], 0x001C)
			call(t, c, "ATCA.SetConfig", map[string]any{"config": cfg})
			call(t, c, "ATCA.LockZone", map[string]any{"zone": 0})
			wkey := make([]byte, 32)
			rand.Read(wkey)
			call(t, c, "ATCA.SetKey", map[string]any{"slot": 4, "key": wkey})
			call(t, c, "ATCA.LockZone", map[string]any{"zone": 1})
			keyPEM, err := afero.ReadFile(d.FS(), "key.pem") // mos get key.pem
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := pem.Decode(keyPEM)
			k, err := x509.ParseECPrivateKey(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			call(t, c, "ATCA.SetKey", map[string]any{"slot": 0, "ecc": true, "key": k.D.FillBytes(make([]byte, 32)), "wkey": wkey, "wkslot": 4})
			setConfig(t, c, map[string]any{"http": map[string]any{"ssl_key": "ATCA:0"}})
			call(t, c, "FS.Remove", map[string]any{"filename": "key.pem"})
		}},
		"connection-flood.yaml": {fix: func(t *testing.T, d *emu.Device, c *client.Client) {
			setConfig(t, wss(t, d), map[string]any{"http": map[string]any{"enable": false}})
		}},
	}
	files, _ := filepath.Glob(filepath.Join("..", "labs", "*.yaml"))
	for _, f := range files {
		if _, ok := labs[filepath.Base(f)]; !ok {
			t.Errorf("%s has no end-to-end test of its documented solution", f)
		}
	}
	if len(files) != len(labs) {
		t.Errorf("%d lab files, %d tested", len(files), len(labs))
	}
	for name, tc := range labs {
		t.Run(name, func(t *testing.T) {
			l, err := Load(filepath.Join("..", "labs", name))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			ctx := context.Background()
			if err := l.Start(ctx, dir, false); err != nil {
				t.Fatal(err)
			}
			r, err := l.Check(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			if r.Passed {
				t.Fatalf("goals met before any fix: %+v", r.Goals)
			}
			solve(t, dir, tc.opts, func(d *emu.Device, c *client.Client) { tc.fix(t, d, c) })
			if r, err = l.Check(ctx, dir); err != nil {
				t.Fatal(err)
			}
			if !r.Passed {
				t.Fatalf("goals not met after the documented fix: %+v", r.Goals)
			}
		})
	}
}

// wss connects to a device serving RPC over TLS, as mos does with
// --port wss://.
func wss(t *testing.T, d *emu.Device) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "wss://"+d.HTTPAddr()+"/rpc", client.WithTLS(&tls.Config{InsecureSkipVerify: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestStartProvisionsATCA builds a device whose ATECC608A is configured
// from mos's YAML sample, locked, with a key generated in slot 0.
func TestStartProvisionsATCA(t *testing.T) {
	labDir := t.TempDir()
	src := filepath.Join(labDir, "atca.yaml")
	sample, err := os.ReadFile(filepath.Join("..", "configs", "atca-test-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(labDir, "chip.yaml"), sample, 0o644) // relative to the lab file
	text := `title: ATECC provisioned
device:
  config: {sys: {atca: {enable: true}}, i2c: {enable: true}}
  atca:
    config: chip.yaml
    lock_config: true
    lock_data: true
    genkey: [0]
goals:
  - {name: g, file: {path: a}}
`
	if err := os.WriteFile(src, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Load(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := l.Start(context.Background(), dir, false); err != nil {
		t.Fatal(err)
	}
	chip, err := atca.Load(filepath.Join(dir, emu.ATCAFile), 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg, written := chip.Inspect()
	if cfg[86] == 0x55 || cfg[87] == 0x55 || !written[0] {
		t.Fatalf("chip not provisioned: locks %x %x, slot 0 written %v", cfg[86], cfg[87], written[0])
	}
	if _, err := Parse("bad.yaml", []byte("title: t\ndevice:\n  atca: {lock_data: true}\ngoals:\n  - {name: g, file: {path: a}}\n")); err == nil || !strings.Contains(err.Error(), "device.atca.lock_data") {
		t.Fatalf("lock_data without lock_config: %v", err)
	}
}
