package moscli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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
