package moscli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu"
)

// TestAgainstDevice runs the stand-in's commands against a real device over
// WebSocket and HTTP, as the README test does.
func TestAgainstDevice(t *testing.T) {
	d, err := emu.New(emu.Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "hello.txt")
	content := strings.Repeat("0123456789", 120) // three FS.Put chunks
	os.WriteFile(local, []byte(content), 0o644)
	level := "2"
	for i, port := range []string{"ws://" + d.HTTPAddr() + "/rpc", "http://" + d.HTTPAddr() + "/rpc"} {
		prev := level
		level = []string{"3", "1"}[i]
		mos := func(args ...string) (string, string, int) {
			var out, errOut bytes.Buffer
			rc := Main(append([]string{"--port", port}, args...), &out, &errOut)
			return out.String(), errOut.String(), rc
		}
		for _, tc := range []struct {
			args    []string
			rc      int
			out, er string
		}{
			{[]string{"put", local}, 0, "", ""},
			{[]string{"get", "hello.txt"}, 0, content, ""},
			{[]string{"ls", "-l"}, 0, "hello.txt 1200\n", ""},
			{[]string{"call", "Sys.GetInfo"}, 0, `"arch": "esp32"`, ""},
			{[]string{"call", "Sys.GetInfo", "{bad"}, 1, "", "not valid JSON"},
			{[]string{"config-get", "debug.level"}, 0, prev + "\n", ""},
			{[]string{"config-set", "debug.level=" + level, "--no-reboot"}, 0, "", "Setting new configuration..."},
			{[]string{"config-get", "debug.level"}, 0, level + "\n", ""},
			{[]string{"config-get", "no.such"}, 1, "", `no config value at path "no.such"`},
			{[]string{"rm", "hello.txt"}, 0, "", ""},
			{[]string{"call", "No.Such"}, 1, "", "404"},
			{[]string{"info"}, 1, "", "unknown command"},
		} {
			out, errOut, rc := mos(tc.args...)
			if rc != tc.rc || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.er) {
				t.Errorf("%s: mos %s = %d\nstdout %q\nstderr %q", port, strings.Join(tc.args, " "), rc, out, errOut)
			}
		}
	}
}

func TestTyped(t *testing.T) {
	for _, tc := range []struct {
		old  any
		val  string
		want any
		ok   bool
	}{
		{true, "false", false, true}, {true, "maybe", nil, false}, {2.0, "3", 3.0, true}, {2.0, "x", nil, false},
		{"80", "443", "443", true}, {nil, "v", "v", true}, {map[string]any{}, "v", nil, false},
	} {
		got, err := typed(tc.old, tc.val)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("typed(%v, %q) = %v, %v", tc.old, tc.val, got, err)
		}
	}
}

// TestArguments: the errors of a malformed command line, found before the
// stand-in dials the device (the port below has nobody listening).
func TestArguments(t *testing.T) {
	const port = "ws://127.0.0.1:1/rpc"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--port", port}, "no command (this stand-in knows call, ls,"},
		{[]string{"call"}, "--port is required"},
		{[]string{"call", "--port"}, "--port needs a value"},
		{[]string{"--port=" + port, "--timeout", "soon", "call", "X"}, "--timeout: "},
		{[]string{"--port", port, "--rpc-creds", "nocolon", "call", "X"}, "--rpc-creds must be user:pass"},
		{[]string{"--port", port, "info"}, `unknown command "info"`},
		{[]string{"--port", port, "call"}, "usage: call METHOD [ARGS_JSON]"},
		{[]string{"call", "A", "{}", "extra", "--port", port}, "usage: call METHOD [ARGS_JSON]"},
		{[]string{"--port", port, "get"}, "usage: get FILENAME"},
		{[]string{"--port", port, "put", "a", "b", "c"}, "usage: put LOCAL [REMOTE]"},
		{[]string{"--port", port, "rm", "a", "b"}, "usage: rm FILENAME"},
		{[]string{"--port", port, "config-get", "a", "b"}, "usage: config-get [KEY]"},
		{[]string{"--port", port, "config-set", "--no-reboot", "--no-save"}, "usage: config-set KEY=VALUE"},
		{[]string{"--port", port, "wifi", "ssid"}, "usage: wifi SSID PASSWORD"},
		{[]string{"--port", port, "console", "x"}, "usage: console"},
		{[]string{"--port", port, "ota"}, "usage: ota FW.ZIP"},
		{[]string{"--port", port, "ota", "a.zip", "b.zip"}, "usage: ota FW.ZIP"},
		{[]string{"--port", port, "ota", "a.zip", "--commit-timeout"}, "--commit-timeout needs a value"},
		{[]string{"--port", port, "ota", "--commit-timeout", "soon", "a.zip"}, "--commit-timeout: "},
		{[]string{"--port", port, "ota", "--commit-timeout=30", "missing.zip"}, "missing.zip"},
	} {
		var out, errOut bytes.Buffer
		if rc := Main(tc.args, &out, &errOut); rc != 1 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("mos %s = %d, stderr %q, want %q", strings.Join(tc.args, " "), rc, errOut.String(), tc.want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	l, err := parseArgs([]string{"-l", "--port=p", "x", "--timeout", "1s", "--no-save", "k=v", "--other"},
		[]string{"--port", "--timeout"}, []string{"-l", "--no-save"})
	want := cmdline{opts: map[string]string{"-l": "", "--port": "p", "--timeout": "1s", "--no-save": ""}, args: []string{"x", "k=v", "--other"}}
	if err != nil || !reflect.DeepEqual(l, want) {
		t.Errorf("parseArgs = %+v, %v; want %+v", l, err, want)
	}
}
