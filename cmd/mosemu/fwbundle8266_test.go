package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/moscli"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/rpc/client"
)

// TestFWBundleESP8266OTA: zips written by `mosemu fw-bundle-esp8266
// --version` update a running ESP8266 with `mos ota` (the stand-in, over
// WebSocket, then over HTTP): the device reboots into the other rBoot
// slot, Sys.GetInfo reports the bundle's fw_version and fw_id, the fs holds
// the bundle's files and keeps the user's.
func TestFWBundleESP8266OTA(t *testing.T) {
	dir := t.TempDir()
	files := filepath.Join(dir, "files")
	os.Mkdir(files, 0o755)
	os.WriteFile(filepath.Join(files, "index.html"), []byte("v2.5 index"), 0o644)
	bundle := func(version string) string {
		out := filepath.Join(dir, "fw-"+version+".zip")
		b, err := mosemu("fw-bundle-esp8266", "--version", version, "--build-id", "20261125-150000/"+version+"@test",
			"--fs", files, "-o", out).CombinedOutput()
		if err != nil {
			t.Fatalf("fw-bundle-esp8266: %v\n%s", err, b)
		}
		return out
	}
	d := startMosemuRun(t, "--arch", "esp8266", "--state", filepath.Join(dir, "dev"), "--broker-addr", testkit.FreeAddr(t))
	ws := regexp.MustCompile(`ws://127\.0\.0\.1:\d+/rpc`).FindString(d.banner)
	if ws == "" {
		t.Fatalf("no ws:// address in the banner:\n%s", d.banner)
	}
	mos := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if rc := moscli.Main(args, &out, &errb); rc != 0 {
			t.Fatalf("mos %s: exit %d\n%s%s", strings.Join(args, " "), rc, out.String(), errb.String())
		}
		return out.String()
	}
	mos("--port", ws, "put", filepath.Join(files, "index.html"), "user.txt")

	mos("--port", ws, "ota", bundle("2.5"))
	info := waitVersion(t, ws, "2.5")
	if info["fw_id"] != "20261125-150000/2.5@test" || info["arch"] != "esp8266" {
		t.Errorf("Sys.GetInfo after the update: %v", info)
	}
	var st struct {
		ActiveSlot  int  `json:"active_slot"`
		IsCommitted bool `json:"is_committed"`
	}
	json.Unmarshal([]byte(mos("--port", ws, "call", "OTA.GetBootState")), &st)
	if st.ActiveSlot != 1 || st.IsCommitted {
		t.Errorf("boot state after the update: %+v", st)
	}
	for name, want := range map[string]string{"index.html": "v2.5 index", "user.txt": "v2.5 index"} {
		var r struct{ Data string }
		json.Unmarshal([]byte(mos("--port", ws, "call", "FS.Get", `{"filename":"`+name+`"}`)), &r)
		if got, _ := base64.StdEncoding.DecodeString(r.Data); string(got) != want {
			t.Errorf("%s after the update = %q, want %q", name, got, want)
		}
	}
	mos("--port", ws, "call", "OTA.Commit")

	// The next one goes to slot 0, over HTTP.
	mos("--port", strings.Replace(ws, "ws://", "http://", 1), "ota", bundle("2.6"))
	if info := waitVersion(t, ws, "2.6"); info["fw_id"] != "20261125-150000/2.6@test" {
		t.Errorf("Sys.GetInfo after the second update: %v", info)
	}
	json.Unmarshal([]byte(mos("--port", ws, "call", "OTA.GetBootState")), &st)
	if st.ActiveSlot != 0 {
		t.Errorf("boot state after the second update: %+v", st)
	}
}

// waitVersion polls Sys.GetInfo until the device runs fw_version version.
func waitVersion(t *testing.T, port, version string) map[string]any {
	t.Helper()
	var info map[string]any
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if c, err := client.Dial(ctx, port); err == nil {
			if res, err := c.Call(ctx, "Sys.GetInfo", nil); err == nil {
				json.Unmarshal(res, &info)
			}
			c.Close()
		}
		cancel()
		if info["fw_version"] == version {
			return info
		}
	}
	t.Fatalf("the device did not come up with fw_version %s: %v", version, info)
	return nil
}
