package configs

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/internal/golden"
	"github.com/spf13/afero"
)

var testMAC = [6]byte{0x24, 0x0A, 0xC4, 0xA1, 0xB2, 0xC3}

func newLoader(files map[string]string) *Loader {
	fs := afero.NewMemMapFs()
	for n, d := range files {
		afero.WriteFile(fs, n, []byte(d), 0o644)
	}
	return &Loader{FS: fs, Schema: NewSchema("esp32"), MAC: testMAC}
}

func TestDefaultsAndGetFormat(t *testing.T) {
	c, err := newLoader(nil).Load(9, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.String("device.id"); got != "esp32_A1B2C3" {
		t.Errorf("device.id = %q", got)
	}
	if got := c.String("wifi.ap.ssid"); got != "Mongoose_A1B2C3" {
		t.Errorf("wifi.ap.ssid = %q", got)
	}
	all, _ := c.JSON("")
	golden.Check(t, "config-get-defaults.json", all)
	sub, _ := c.JSON("mqtt")
	if !strings.HasPrefix(string(sub), `{"enable":false,"server":"iot.eclipse.org:1883"`) || !strings.Contains(string(sub), `"reconnect_timeout_min":2.000000`) {
		t.Errorf("mqtt = %s", sub)
	}
	if v, _ := c.JSON("http.enable"); string(v) != "true" {
		t.Errorf("http.enable = %s", v)
	}
	if _, err := c.JSON("no.such"); err == nil {
		t.Error("unknown key accepted")
	}
}

func TestLayering(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		check func(t *testing.T, c *Config)
		err   string
	}{
		{"conf9 overrides conf1", map[string]string{
			"conf1.json": `{"debug":{"level":1},"http":{"listen_addr":"8080"}}`,
			"conf9.json": `{"debug":{"level":3}}`,
		}, func(t *testing.T, c *Config) {
			if c.Int("debug.level") != 3 || c.String("http.listen_addr") != "8080" {
				t.Errorf("level %d listen %q", c.Int("debug.level"), c.String("http.listen_addr"))
			}
		}, ""},
		{"conf_acl of level 1 restricts level 9", map[string]string{
			"conf1.json": `{"conf_acl":"wifi.*,-*"}`,
			"conf9.json": `{"wifi":{"sta":{"ssid":"net"}},"debug":{"level":4}}`,
		}, func(t *testing.T, c *Config) {
			if c.String("wifi.sta.ssid") != "net" || c.Int("debug.level") != 2 {
				t.Errorf("ssid %q level %d", c.String("wifi.sta.ssid"), c.Int("debug.level"))
			}
		}, ""},
		{"try replaces and is consumed", map[string]string{
			"conf9.json":     `{"debug":{"level":1}}`,
			"conf9.json.try": `{"debug":{"level":4}}`,
		}, func(t *testing.T, c *Config) {
			if c.Int("debug.level") != 4 {
				t.Errorf("level %d", c.Int("debug.level"))
			}
		}, ""},
		{"legacy conf.json", map[string]string{"conf.json": `{"debug":{"level":0}}`},
			func(t *testing.T, c *Config) {
				if c.Int("debug.level") != 0 {
					t.Errorf("level %d", c.Int("debug.level"))
				}
			}, ""},
		{"unknown keys ignored", map[string]string{"conf9.json": `{"rpc":{"http":{"enable":false}},"x":1}`},
			func(t *testing.T, c *Config) {
				if !c.Bool("rpc.http_enable") {
					t.Error("rpc.http.enable changed rpc.http_enable")
				}
			}, ""},
		{"type error", map[string]string{"conf9.json": `{"debug":{"level":"high"}}`}, nil, "[debug.level] is not a number"},
		{"bool error", map[string]string{"conf9.json": `{"http":{"enable":1}}`}, nil, "[http.enable] is not a boolean"},
		{"string error", map[string]string{"conf9.json": `{"device":{"id":5}}`}, nil, "[device.id] is not a string"},
		{"bad json", map[string]string{"conf9.json": `{"debug":`}, nil, "Invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLoader(tt.files)
			c, err := l.Load(9, true)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
			if _, err := l.FS.Stat("conf9.json.try"); !errors.Is(err, os.ErrNotExist) {
				t.Error(".try file not consumed")
			}
		})
	}
}

func TestSaveDiff(t *testing.T) {
	l := newLoader(map[string]string{"conf1.json": `{"http":{"listen_addr":"8080"}}`})
	c, _ := l.Load(9, true)
	if err := c.Apply("", []byte(`{"debug":{"level":3},"http":{"listen_addr":"8080"},"wifi":{"sta":{"enable":true,"ssid":"Net"}},"mqtt":{"reconnect_timeout_max":30}}`), "*", nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(c, 9, false); err != nil {
		t.Fatal(err)
	}
	got, _ := afero.ReadFile(l.FS, "conf9.json")
	golden.Check(t, "conf9-saved.json", got)
	c2, _ := l.Load(9, true)
	a, _ := c.JSON("")
	b, _ := c2.JSON("")
	if string(a) != string(b) {
		t.Fatal("saved config does not load back identical")
	}
}

func TestApplyIsAllOrNothing(t *testing.T) {
	c := New(NewSchema("esp32"))
	err := c.Apply("", []byte(`{"debug":{"level":3,"udp_log_level":"x"}}`), "*", nil)
	if err == nil || c.Int("debug.level") != 2 {
		t.Fatalf("err %v, level %d", err, c.Int("debug.level"))
	}
}

func FuzzApply(f *testing.F) {
	f.Add([]byte(`{"debug":{"level":3},"wifi":{"sta":{"ssid":"x"}}}`))
	f.Add([]byte(`[1,2]`))
	s := NewSchema("esp32")
	f.Fuzz(func(t *testing.T, b []byte) {
		c := New(s)
		if err := c.Apply("", b, "*", nil); err != nil {
			return
		}
		if _, err := c.JSON(""); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRanges: Apply (Config.Set) refuses out-of-range values and changes
// nothing; loading a saved config clamps them and says so.
func TestRanges(t *testing.T) {
	c := New(NewSchema("esp32"))
	for _, v := range []string{`{"mqtt":{"keep_alive":-1}}`, `{"mqtt1":{"keep_alive":70000}}`, `{"mqtt":{"reconnect_timeout_min":-0.5}}`,
		`{"rpc":{"max_frame_size":132000000}}`, `{"rpc":{"max_frame_size":0}}`} {
		err := c.Apply("", []byte(v), "*", nil)
		if err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%s: %v", v, err)
		}
	}
	if c.Int("mqtt.keep_alive") != 60 {
		t.Fatal("a refused value changed the config")
	}
	if err := c.Apply("", []byte(`{"mqtt":{"keep_alive":65535,"reconnect_timeout_min":0}}`), "*", nil); err != nil {
		t.Fatalf("in-range values refused: %v", err)
	}
	var logged strings.Builder
	l := newLoader(map[string]string{"conf9.json": `{"mqtt":{"keep_alive":-1,"reconnect_timeout_max":1e300},"rpc":{"max_frame_size":132000000}}`})
	l.Log = slog.New(slog.NewTextHandler(&logged, nil))
	c, err := l.Load(9, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Int("mqtt.keep_alive") != 0 || c.Float("mqtt.reconnect_timeout_max") != 86400 || c.Int("rpc.max_frame_size") != MaxFrameSize {
		t.Fatalf("not clamped: %d %f %d", c.Int("mqtt.keep_alive"), c.Float("mqtt.reconnect_timeout_max"), c.Int("rpc.max_frame_size"))
	}
	if strings.Count(logged.String(), "out of range") != 3 {
		t.Fatalf("clamping not logged: %s", logged.String())
	}
}

// TestLargeFilesDecodedOnce: a large config file applied to several configs
// of one schema (conf0.json at every boot of a fleet's devices) is decoded
// once, and applying it, then changing a config, leaves the others as the
// file says.
func TestLargeFilesDecodedOnce(t *testing.T) {
	s := NewSchema("esp32")
	compact, err := New(s).JSON("")
	if err != nil {
		t.Fatal(err)
	}
	compact = []byte(strings.Replace(string(compact), `"level":2`, `"level":3`, 1))
	var indented bytes.Buffer // as the factory image's conf0.json
	if err := json.Indent(&indented, compact, "", "  "); err != nil {
		t.Fatal(err)
	}
	text := indented.Bytes()
	if len(text) < memoMin {
		t.Fatalf("defaults are %d bytes, below the memo's %d", len(text), memoMin)
	}
	a := New(s)
	if err := a.Apply("", text, "*", nil); err != nil {
		t.Fatal(err)
	}
	if n := len(s.parsed.m); n != 1 {
		t.Fatalf("memo holds %d texts, want 1", n)
	}
	if err := a.Apply("debug", []byte(`{"level":4}`), "*", nil); err != nil {
		t.Fatal(err)
	}
	b := New(s)
	if err := b.Apply("", text, "*", nil); err != nil {
		t.Fatal(err)
	}
	if a.Int("debug.level") != 4 || b.Int("debug.level") != 3 {
		t.Fatalf("debug.level: a %d (want 4), b %d (want 3)", a.Int("debug.level"), b.Int("debug.level"))
	}
	bad := append(append([]byte{}, text...), '}')
	for range 2 {
		var pe *ParseError
		if err := New(s).Apply("", bad, "*", nil); !errors.As(err, &pe) || pe.Msg != "Invalid JSON" {
			t.Fatalf("trailing garbage: %v, want Invalid JSON", err)
		}
	}
	if n := len(s.parsed.m); n != 1 {
		t.Fatalf("memo holds %d texts after a bad one, want 1", n)
	}
}
