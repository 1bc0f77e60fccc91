package configs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"

	"github.com/mosemu/mosemu/internal/glob"
	"github.com/spf13/afero"
)

// Config is a set of config values over a schema: only the values that
// differ from the schema defaults are stored.
type Config struct {
	schema *Schema
	vals   map[string]any // leaf path -> string, int64, bool, float64
}

// New returns a config holding the schema defaults.
func New(s *Schema) *Config { return &Config{schema: s, vals: map[string]any{}} }

// Schema returns the schema of c.
func (c *Config) Schema() *Schema { return c.schema }

// Clone returns an independent copy.
func (c *Config) Clone() *Config {
	n := &Config{schema: c.schema, vals: make(map[string]any, len(c.vals))}
	for k, v := range c.vals {
		n.vals[k] = v
	}
	return n
}

// Value returns the value of a leaf.
func (c *Config) Value(path string) (any, bool) {
	n, ok := c.schema.byPath[path]
	if !ok || n.Kind == Object {
		return nil, false
	}
	if v, ok := c.vals[path]; ok {
		return v, true
	}
	return n.Default, true
}

// String returns a string leaf ("" if absent or of another kind).
func (c *Config) String(path string) string { v, _ := c.Value(path); s, _ := v.(string); return s }

// Int returns an int leaf.
func (c *Config) Int(path string) int { v, _ := c.Value(path); i, _ := v.(int64); return int(i) }

// Bool returns a bool leaf.
func (c *Config) Bool(path string) bool { v, _ := c.Value(path); b, _ := v.(bool); return b }

// Float returns a double leaf.
func (c *Config) Float(path string) float64 { v, _ := c.Value(path); f, _ := v.(float64); return f }

// SetValue sets a leaf directly (no ACL), converting ints and floats.
func (c *Config) SetValue(path string, v any) error {
	n, ok := c.schema.byPath[path]
	if !ok || n.Kind == Object {
		return fmt.Errorf("invalid config key %q", path)
	}
	switch n.Kind {
	case String:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("[%s] is not a string", path)
		}
		c.set(n, s)
	case Int:
		switch x := v.(type) {
		case int:
			c.set(n, int64(x))
		case int64:
			c.set(n, x)
		default:
			return fmt.Errorf("[%s] is not a number", path)
		}
	case Bool:
		b, ok := v.(bool)
		if !ok {
			return fmt.Errorf("[%s] is not a boolean", path)
		}
		c.set(n, b)
	case Double:
		switch x := v.(type) {
		case float64:
			c.set(n, x)
		case int:
			c.set(n, float64(x))
		default:
			return fmt.Errorf("[%s] is not a number", path)
		}
	}
	return nil
}

func (c *Config) set(n *Node, v any) {
	if v == n.Default {
		delete(c.vals, n.Path)
		return
	}
	c.vals[n.Path] = v
}

// ParseError is a config value the firmware's parser refuses; its message
// is the firmware's ("[debug.level] is not a number", "Invalid JSON").
type ParseError struct{ Msg string }

func (e *ParseError) Error() string { return e.Msg }

// Apply merges JSON text into c under the node at key ("" for the whole
// config), as the firmware parses a config file or a Config.Set value:
// unknown keys are ignored, keys conf_acl refuses are skipped and reported
// through denied.
//
// A value outside its key's range (Node.Min/Max) is refused with a
// *ParseError.
func (c *Config) Apply(key string, text []byte, acl string, denied func(path string)) error {
	return c.applyText(key, text, acl, denied, nil)
}

// applyText is Apply; with clamped set, out-of-range values are brought
// into range and reported instead of refused (loading a saved config).
func (c *Config) applyText(key string, text []byte, acl string, denied func(path string), clamped func(path string, from, to any)) error {
	n, ok := c.schema.Lookup(key)
	if !ok {
		return fmt.Errorf("invalid config key %q", key)
	}
	v, err := c.schema.decode(text)
	if err != nil {
		return err
	}
	// Validate everything first so that a bad value changes nothing.
	staged := c.Clone()
	if err := staged.apply(n, v, acl, denied, clamped); err != nil {
		return err
	}
	c.vals = staged.vals
	return nil
}

func (c *Config) apply(n *Node, v any, acl string, denied func(string), clamped func(string, any, any)) error {
	if n.Kind == Object {
		m, ok := v.(map[string]any)
		if !ok {
			return &ParseError{fmt.Sprintf("[%s] is not an object", n.Path)}
		}
		for _, ch := range n.Children {
			if cv, ok := m[ch.Key]; ok {
				if err := c.apply(ch, cv, acl, denied, clamped); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if !CheckACL(acl, n.Path) {
		if denied != nil {
			denied(n.Path)
		}
		return nil
	}
	var val any
	switch n.Kind {
	case String:
		switch x := v.(type) {
		case string:
			val = x
		case nil:
			val = ""
		default:
			return &ParseError{fmt.Sprintf("[%s] is not a string", n.Path)}
		}
	case Int:
		num, ok := v.(json.Number)
		if !ok {
			return &ParseError{fmt.Sprintf("[%s] is not a number", n.Path)}
		}
		i, err := num.Int64()
		if err != nil {
			f, ferr := num.Float64()
			if ferr != nil || f != math.Trunc(f) {
				return &ParseError{fmt.Sprintf("[%s] failed to parse [%s]", n.Path, num)}
			}
			i = int64(f)
		}
		val = i
	case Bool:
		b, ok := v.(bool)
		if !ok {
			return &ParseError{fmt.Sprintf("[%s] is not a boolean", n.Path)}
		}
		val = b
	case Double:
		num, ok := v.(json.Number)
		if !ok {
			return &ParseError{fmt.Sprintf("[%s] is not a number", n.Path)}
		}
		f, err := num.Float64()
		if err != nil {
			return &ParseError{fmt.Sprintf("[%s] failed to parse [%s]", n.Path, num)}
		}
		val = f
	}
	if in := n.clamp(val); in != val {
		if clamped == nil {
			return &ParseError{fmt.Sprintf("[%s] out of range: %v (%v..%v)", n.Path, val, n.bound(n.Min), n.bound(n.Max))}
		}
		clamped(n.Path, val, in)
		val = in
	}
	c.set(n, val)
	return nil
}

// CheckACL applies a conf_acl to a leaf path (first matching +/- glob
// decides; no match denies).
func CheckACL(acl, path string) bool { return glob.MatchList(acl, path) }

// JSON renders the subtree at key ("" for all) as Config.Get prints it:
// compact, schema order, doubles as %f.
func (c *Config) JSON(key string) ([]byte, error) {
	n, ok := c.schema.Lookup(key)
	if !ok {
		return nil, fmt.Errorf("invalid config key %q", key)
	}
	var b bytes.Buffer
	c.emit(&b, n, "", "", func(*Node) bool { return true })
	return b.Bytes(), nil
}

// emit writes n; indent "" means compact. keep filters leaves.
func (c *Config) emit(b *bytes.Buffer, n *Node, indent, prefix string, keep func(*Node) bool) {
	if n.Kind != Object {
		v, _ := c.Value(n.Path)
		writeScalar(b, v)
		return
	}
	b.WriteByte('{')
	first := true
	for _, ch := range n.Children {
		if !has(ch, keep) {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		if indent != "" {
			b.WriteString("\n" + prefix + indent)
		}
		b.WriteString(strconv.Quote(ch.Key))
		b.WriteByte(':')
		if indent != "" {
			b.WriteByte(' ')
		}
		c.emit(b, ch, indent, prefix+indent, keep)
	}
	if indent != "" && !first {
		b.WriteString("\n" + prefix)
	}
	b.WriteByte('}')
}

func has(n *Node, keep func(*Node) bool) bool {
	if n.Kind != Object {
		return keep(n)
	}
	for _, ch := range n.Children {
		if has(ch, keep) {
			return true
		}
	}
	return false
}

func writeScalar(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case string:
		j, _ := json.Marshal(x)
		b.Write(j)
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'f', 6, 64))
	}
}

// Diff renders, pretty-printed with 2-space indentation and no trailing
// newline, the values of c that differ from base: the content of a saved
// confN.json.
func (c *Config) Diff(base *Config) []byte {
	var b bytes.Buffer
	keep := func(n *Node) bool {
		v1, _ := c.Value(n.Path)
		v2, _ := base.Value(n.Path)
		return v1 != v2
	}
	c.emit(&b, c.schema.Root, "  ", "", keep)
	return b.Bytes()
}

// FileName returns the name of the level's config file ("conf9.json").
func FileName(level int) string { return fmt.Sprintf("conf%d.json", level) }

// Loader loads layered configs from a device filesystem.
type Loader struct {
	FS     afero.Fs
	Schema *Schema
	Log    *slog.Logger
	// MAC is the factory MAC that device.id and wifi.ap.ssid placeholders
	// are expanded from after loading.
	MAC [6]byte
}

// Load builds the config as it is after level (0 = defaults only, 9 =
// everything). At boot (boot=true) a "<file>.try" replaces its file and is
// deleted, and a legacy conf.json becomes conf9.json.
func (l *Loader) Load(level int, boot bool) (*Config, error) {
	c := New(l.Schema)
	if boot {
		if _, err := l.FS.Stat("conf.json"); err == nil {
			if _, err := l.FS.Stat(FileName(9)); errors.Is(err, os.ErrNotExist) {
				l.FS.Rename("conf.json", FileName(9))
			}
		}
	}
	acl := "*"
	for i := 0; i <= level && i <= 9; i++ { // conf0.json: the build's defaults
		names := []string{FileName(i)}
		if i == 6 {
			names = []string{"conf_vendor.json", FileName(6)}
		}
		for _, name := range names {
			data, err := l.read(name, boot)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			denied := func(p string) {
				if l.Log != nil {
					l.Log.Error(fmt.Sprintf("Not allowed to set [%s]", p), "src", "mgos_config_util.c:198")
				}
			}
			clamped := func(p string, from, to any) {
				if l.Log != nil {
					l.Log.Error(fmt.Sprintf("%s: [%s] out of range: %v, using %v", name, p, from, to), "src", "mgos_sys_config.c:173")
				}
			}
			if err := c.applyText("", data, acl, denied, clamped); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		acl = c.String("conf_acl")
	}
	c.ExpandPlaceholders(l.MAC)
	return c, nil
}

func (l *Loader) read(name string, boot bool) ([]byte, error) {
	try := name + ".try"
	if data, err := afero.ReadFile(l.FS, try); err == nil {
		if boot {
			l.FS.Remove(try)
		}
		return data, nil
	}
	return afero.ReadFile(l.FS, name)
}

// Save writes the values of c that differ from the config at level-1 to
// confN.json (or confN.json.try for a try-once save) through a temporary
// file and a rename, removing a stale .try on a normal save.
func (l *Loader) Save(c *Config, level int, tryOnce bool) error {
	if level < 1 || level > 9 {
		return fmt.Errorf("invalid level %d", level)
	}
	base, err := l.Load(level-1, false)
	if err != nil {
		return err
	}
	name := FileName(level)
	if tryOnce {
		name += ".try"
	}
	tmp := name + ".tmp"
	if err := afero.WriteFile(l.FS, tmp, c.Diff(base), 0o644); err != nil {
		return err
	}
	if err := l.FS.Rename(tmp, name); err != nil {
		return err
	}
	if !tryOnce {
		l.FS.Remove(FileName(level) + ".try")
	}
	if l.Log != nil {
		l.Log.Info("Saved to "+name, "src", "mgos_sys_config.c:265")
	}
	return nil
}

// ExpandPlaceholders replaces the '?' characters of device.id and
// wifi.ap.ssid from the end with the end of the MAC's hex digits, when
// their count is even (mgos_expand_placeholders). device.mac, when set,
// overrides mac.
func (c *Config) ExpandPlaceholders(mac [6]byte) [6]byte {
	if m := c.String("device.mac"); m != "" {
		var b [6]byte
		if _, err := fmt.Sscanf(m, "%02x:%02x:%02x:%02x:%02x:%02x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]); err == nil {
			mac = b
		}
	}
	hex := fmt.Sprintf("%02X%02X%02X%02X%02X%02X", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
	for _, p := range []string{"device.id", "wifi.ap.ssid"} {
		s := []byte(c.String(p))
		n := bytes.Count(s, []byte("?"))
		if n == 0 || n%2 != 0 {
			continue
		}
		j := len(hex) - 1
		for i := len(s) - 1; i >= 0 && j >= 0; i-- {
			if s[i] == '?' {
				s[i] = hex[j]
				j--
			}
		}
		c.SetValue(p, string(s))
	}
	return mac
}
