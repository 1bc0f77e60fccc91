// Package moscli is a stand-in for the subset of the mos command line the
// README uses (call, ls, get, put, rm, config-get, config-set, ota, wifi,
// console, with --port and --rpc-creds), built on the repository's Go RPC client. It lets the
// README test run the README's mos lines on a machine without mos; the
// frames it sends are the client's, which speak mos's wire formats.
package moscli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
)

// putChunk is the FS.Put chunk size.
const putChunk = 512

// Main runs one mos command line (without the program name) and returns
// the exit status: 0 on success, 1 on an error (printed as mos prints it,
// "Error: ..." on stderr).
func Main(args []string, stdout, stderr io.Writer) int {
	if err := run(args, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	return 0
}

// known lists the commands the stand-in knows, for its error messages.
const known = "call, ls, get, put, rm, config-get, config-set, ota, wifi, console"

type cli struct {
	port, creds string
	timeout     time.Duration
	out, log    io.Writer
}

// cmdline is a command line split by parseArgs.
type cmdline struct {
	opts map[string]string // the options given; a switch maps to ""
	args []string          // the other arguments, in order
}

// parseArgs splits argv into the options named in valued, which take a
// value (--name=value or --name value), the switches named in switches,
// and the other arguments, kept in order: an option it is not told about
// is an other argument, left to the command to make sense of.
func parseArgs(argv, valued, switches []string) (cmdline, error) {
	l := cmdline{opts: map[string]string{}}
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		name, val, hasVal := strings.Cut(a, "=")
		switch {
		case slices.Contains(switches, a):
			l.opts[a] = ""
		case slices.Contains(valued, name):
			if !hasVal {
				if i+1 >= len(argv) {
					return l, fmt.Errorf("%s needs a value", name)
				}
				i++
				val = argv[i]
			}
			l.opts[name] = val
		default:
			l.args = append(l.args, a)
		}
	}
	return l, nil
}

// command is one mos command of the stand-in.
type command struct {
	usage    string // shown when the number of arguments is wrong
	min, max int    // the number of other arguments; max -1: no limit
	valued   []string
	switches []string
	run      func(context.Context, cmdline) error
}

// commands returns the commands c runs, by name.
func (c *cli) commands() map[string]command {
	return map[string]command{
		"call":       {usage: "call METHOD [ARGS_JSON]", min: 1, max: 2, run: c.call},
		"ls":         {usage: "ls [-l] [PATH]", max: -1, switches: []string{"-l"}, run: c.ls},
		"get":        {usage: "get FILENAME", min: 1, max: 1, run: c.get},
		"put":        {usage: "put LOCAL [REMOTE]", min: 1, max: 2, run: c.put},
		"rm":         {usage: "rm FILENAME", min: 1, max: 1, run: c.rm},
		"config-get": {usage: "config-get [KEY]", max: 1, run: c.configGet},
		"config-set": {usage: "config-set KEY=VALUE [KEY=VALUE]", min: 1, max: -1, switches: []string{"--no-reboot", "--no-save"}, run: c.configSet},
		"ota":        {usage: "ota FW.ZIP [--commit-timeout SECONDS]", min: 1, max: 1, valued: []string{"--commit-timeout"}, run: c.ota},
		"console":    {usage: "console", run: c.console},
		"wifi": {usage: "wifi SSID PASSWORD", min: 2, max: 2, run: func(ctx context.Context, l cmdline) error {
			// mos wifi SSID PASS is this config-set
			return c.configSet(ctx, cmdline{args: []string{"wifi.ap.enable=false", "wifi.sta.enable=true", "wifi.sta.ssid=" + l.args[0], "wifi.sta.pass=" + l.args[1]}})
		}},
	}
}

func run(argv []string, stdout, stderr io.Writer) error {
	c := &cli{timeout: 20 * time.Second, out: stdout, log: stderr}
	global, err := parseArgs(argv, []string{"--port", "--rpc-creds", "--timeout"}, nil)
	if err != nil {
		return err
	}
	c.port, c.creds = global.opts["--port"], global.opts["--rpc-creds"]
	if v, ok := global.opts["--timeout"]; ok {
		if c.timeout, err = time.ParseDuration(v); err != nil {
			return fmt.Errorf("--timeout: %w", err)
		}
	}
	if len(global.args) == 0 {
		return errors.New("no command (this stand-in knows " + known + ")")
	}
	if c.port == "" {
		c.port = os.Getenv("MOS_PORT")
	}
	if c.port == "" {
		return errors.New("--port is required")
	}
	if !strings.Contains(c.port, "://") && !filepath.IsAbs(c.port) {
		abs, err := filepath.Abs(c.port) // a serial port named by a relative path (STATE/serial)
		if err != nil {
			return err
		}
		c.port = abs
	}
	if c.creds != "" && !strings.Contains(c.creds, ":") {
		return errors.New("--rpc-creds must be user:pass")
	}
	name := global.args[0]
	cmd, ok := c.commands()[name]
	if !ok {
		return fmt.Errorf("unknown command %q (this stand-in knows %s)", name, known)
	}
	l, err := parseArgs(global.args[1:], cmd.valued, cmd.switches)
	if err != nil {
		return err
	}
	if len(l.args) < cmd.min || cmd.max >= 0 && len(l.args) > cmd.max {
		return errors.New("usage: " + cmd.usage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return cmd.run(ctx, l)
}

func (c *cli) dial(ctx context.Context) (*client.Client, error) {
	var opts []client.Option
	if user, pass, ok := strings.Cut(c.creds, ":"); ok {
		opts = append(opts, client.WithCredentials(user, pass))
	}
	return client.Dial(ctx, c.port, opts...)
}

// do dials, calls one method and closes.
func (c *cli) do(ctx context.Context, method string, params any) (json.RawMessage, error) {
	cl, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return cl.Call(ctx, method, params)
}

func (c *cli) printJSON(raw json.RawMessage) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("bad result %q: %w", raw, err)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	_, err := fmt.Fprintf(c.out, "%s\n", b)
	return err
}

func (c *cli) call(ctx context.Context, l cmdline) error {
	args := l.args
	var params any
	if len(args) == 2 {
		if !json.Valid([]byte(args[1])) {
			return fmt.Errorf("args %q: not valid JSON", args[1])
		}
		params = json.RawMessage(args[1])
	}
	res, err := c.do(ctx, args[0], params)
	if err != nil {
		return err
	}
	if args[0] == "Sys.Reboot" {
		defer time.Sleep(200 * time.Millisecond)
	}
	return c.printJSON(res)
}

// retry makes up to 3 attempts, as mos does for Config.* and FS.Get/Put.
func retry(ctx context.Context, f func() (json.RawMessage, error)) (json.RawMessage, error) {
	var err error
	for range 3 {
		var res json.RawMessage
		if res, err = f(); err == nil || ctx.Err() != nil {
			return res, err
		}
	}
	return nil, err
}

func (c *cli) ls(ctx context.Context, l cmdline) error {
	_, long := l.opts["-l"]
	path := ""
	if len(l.args) > 0 {
		path = l.args[0]
	}
	params := map[string]any{}
	if path != "" {
		params["path"] = path
	}
	if !long {
		res, err := c.do(ctx, "FS.List", params)
		if err != nil {
			return err
		}
		var names []string
		if err := json.Unmarshal(res, &names); err != nil {
			return fmt.Errorf("bad FS.List result %q", res)
		}
		for _, n := range names {
			fmt.Fprintln(c.out, n)
		}
		return nil
	}
	res, err := c.do(ctx, "FS.ListExt", params)
	if err != nil {
		return err
	}
	var files []struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	}
	if err := json.Unmarshal(res, &files); err != nil {
		return fmt.Errorf("bad FS.ListExt result %q", res)
	}
	for _, f := range files {
		fmt.Fprintf(c.out, "%s %d\n", f.Name, f.Size)
	}
	return nil
}

func (c *cli) get(ctx context.Context, l cmdline) error {
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	for off := 0; ; {
		res, err := cl.Call(ctx, "FS.Get", map[string]any{"filename": l.args[0], "offset": off, "len": putChunk})
		if err != nil {
			return err
		}
		var r struct {
			Data string `json:"data"`
			Left int    `json:"left"`
		}
		if err := json.Unmarshal(res, &r); err != nil {
			return fmt.Errorf("bad FS.Get result %q", res)
		}
		b, err := base64.StdEncoding.DecodeString(r.Data)
		if err != nil {
			return fmt.Errorf("bad FS.Get data: %w", err)
		}
		c.out.Write(b)
		off += len(b)
		if r.Left == 0 || len(b) == 0 {
			return nil
		}
	}
}

func (c *cli) put(ctx context.Context, l cmdline) error {
	args := l.args
	data, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	remote := filepath.Base(args[0])
	if len(args) == 2 {
		remote = args[1]
	}
	if len(data) == 0 {
		return nil // mos sends nothing for an empty file
	}
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	for off := 0; off < len(data); off += putChunk {
		chunk := data[off:min(off+putChunk, len(data))]
		params := map[string]any{"filename": remote, "offset": off, "append": off > 0,
			"data": base64.StdEncoding.EncodeToString(chunk)}
		if _, err := retry(ctx, func() (json.RawMessage, error) { return cl.Call(ctx, "FS.Put", params) }); err != nil {
			return err
		}
	}
	return nil
}

func (c *cli) rm(ctx context.Context, l cmdline) error {
	_, err := c.do(ctx, "FS.Remove", map[string]any{"filename": l.args[0]})
	return err
}

func (c *cli) configGet(ctx context.Context, l cmdline) error {
	args := l.args
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	res, err := retry(ctx, func() (json.RawMessage, error) { return cl.Call(ctx, "Config.Get", nil) })
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return c.printJSON(res)
	}
	var tree map[string]any
	if err := json.Unmarshal(res, &tree); err != nil {
		return fmt.Errorf("bad Config.Get result: %w", err)
	}
	v, ok := lookup(tree, args[0])
	if !ok {
		return fmt.Errorf("no config value at path %q", args[0])
	}
	switch v := v.(type) {
	case string:
		fmt.Fprintln(c.out, v)
	case float64:
		fmt.Fprintln(c.out, strconv.FormatFloat(v, 'f', -1, 64))
	case bool:
		fmt.Fprintln(c.out, v)
	case map[string]any:
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(c.out, "%s\n", b)
	default:
		return fmt.Errorf("unknown value type: %v", v)
	}
	return nil
}

// configSet does what mos config-set does: read the config to learn each
// key's type, then one Config.Set with save and reboot (Config.Save when
// the firmware is too old to save in Config.Set). Where mos sleeps 200 ms
// and leaves the pause before the next command to its user, the stand-in
// waits until the device is back.
func (c *cli) configSet(ctx context.Context, l cmdline) error {
	_, noReboot := l.opts["--no-reboot"]
	_, noSave := l.opts["--no-save"]
	save, reboot := !noSave, !noReboot
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	fmt.Fprintln(c.log, "Getting configuration...")
	raw, err := retry(ctx, func() (json.RawMessage, error) { return cl.Call(ctx, "Config.Get", nil) })
	if err != nil {
		return err
	}
	var current map[string]any
	if err := json.Unmarshal(raw, &current); err != nil {
		return fmt.Errorf("bad Config.Get result: %w", err)
	}
	update := map[string]any{}
	for _, kv := range l.args {
		key, val, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q: want KEY=VALUE", kv)
		}
		old, _ := lookup(current, key)
		v, err := typed(old, val)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		set(update, key, v)
	}
	fmt.Fprintln(c.log, "Setting new configuration...")
	params := map[string]any{"config": update}
	if save {
		params["save"] = true
	}
	if reboot {
		params["reboot"] = true
	}
	res, err := retry(ctx, func() (json.RawMessage, error) { return cl.Call(ctx, "Config.Set", params) })
	if err != nil {
		return err
	}
	var r struct {
		Saved bool `json:"saved"`
	}
	json.Unmarshal(res, &r)
	if !r.Saved && save {
		if reboot {
			fmt.Fprintln(c.log, "Saving and rebooting...")
		} else {
			fmt.Fprintln(c.log, "Saving...")
		}
		if _, err := retry(ctx, func() (json.RawMessage, error) {
			return cl.Call(ctx, "Config.Save", map[string]any{"reboot": reboot, "try_once": false})
		}); err != nil {
			return err
		}
	}
	if save && reboot {
		c.waitReboot(ctx, cl)
	}
	return nil
}

// ota does what mos ota does: OTA.Status (the device must be idle),
// OTA.Begin with the size, OTA.Write in 512-byte chunks (3 tries each,
// then OTA.End and the error), OTA.End; then, as a user would, it waits for the device to reboot into
// the update.
func (c *cli) ota(ctx context.Context, l cmdline) error {
	commitTimeout := 300
	if v, ok := l.opts["--commit-timeout"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("--commit-timeout: %w", err)
		}
		commitTimeout = n
	}
	data, err := os.ReadFile(l.args[0])
	if err != nil {
		return err
	}
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	res, err := cl.Call(ctx, "OTA.Status", nil)
	if err != nil {
		return err
	}
	var st struct {
		State int `json:"state"`
	}
	if json.Unmarshal(res, &st) != nil || (st.State != 0 && st.State != 2) {
		return fmt.Errorf("device is busy with an update (OTA.Status %s)", res)
	}
	if _, err := cl.Call(ctx, "OTA.Begin", map[string]any{"timeout": 600, "commit_timeout": commitTimeout, "size": len(data)}); err != nil {
		return err
	}
	for off := 0; off < len(data); off += putChunk {
		params := map[string]any{"offset": off, "data": base64.StdEncoding.EncodeToString(data[off:min(off+putChunk, len(data))])}
		if _, err := retry(ctx, func() (json.RawMessage, error) { return cl.Call(ctx, "OTA.Write", params) }); err != nil {
			cl.Call(ctx, "OTA.End", nil) // as mos: end the failed update
			return fmt.Errorf("write failed at offset %d: %w", off, err)
		}
	}
	if _, err := cl.Call(ctx, "OTA.End", nil); err != nil {
		return err
	}
	fmt.Fprintln(c.log, "Update applied, device is rebooting")
	c.waitReboot(ctx, cl)
	return nil
}

// waitReboot waits for the device to drop the connection and for its port
// to accept connections again (the new config may have changed the
// protocol on it, e.g. to TLS).
func (c *cli) waitReboot(ctx context.Context, cl *client.Client) {
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := cl.Call(pctx, "RPC.Ping", nil)
		cancel()
		var rpcErr *rpc.Error
		if err != nil && !errors.As(err, &rpcErr) {
			break // the connection dropped; an error reply (403 by an ACL, 418 while shutting down) means it is still up
		}
	}
	u, err := url.Parse(c.port)
	if err != nil || u.Host == "" {
		time.Sleep(time.Second) // serial: the boot takes a few ms
		return
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), strconv.Itoa(map[string]int{"ws": 80, "http": 80, "wss": 443, "https": 443}[u.Scheme]))
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if conn, err := net.DialTimeout("tcp", host, time.Second); err == nil {
			conn.Close()
			return
		}
	}
}

// lookup finds a dotted key in a config tree.
func lookup(tree map[string]any, key string) (any, bool) {
	var cur any = tree
	for _, p := range strings.Split(key, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// set stores v at a dotted key, creating the intermediate objects.
func set(tree map[string]any, key string, v any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := tree[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			tree[p] = next
		}
		tree = next
	}
	tree[parts[len(parts)-1]] = v
}

// typed converts a command-line value to the type of the key's value in
// the config read back, as mos does: bool, number or string (also for a
// key the config does not have); objects are refused.
func typed(old any, val string) (any, error) {
	switch old.(type) {
	case bool:
		return strconv.ParseBool(val)
	case float64:
		return strconv.ParseFloat(val, 64)
	case map[string]any, []any:
		return nil, errors.New("is an object: set its fields one by one")
	}
	return val, nil
}
