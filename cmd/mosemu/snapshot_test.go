package main

import (
	"bufio"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildMosemu builds the binary under test.
func buildMosemu(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mosemu")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// running is a `mosemu run` process.
type running struct {
	cmd      *exec.Cmd
	http, ui string
}

var (
	httpLine = regexp.MustCompile(`curl http://([0-9.:]+)/rpc`)
	uiLine   = regexp.MustCompile(`Lab console: +http://([0-9.:]+)/`)
)

func startRun(t *testing.T, bin string, args ...string) *running {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"run", "--http", "127.0.0.1:0", "--broker=false", "--ui", "127.0.0.1:0", "-q"}, args...)...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd}
	t.Cleanup(func() { r.stop(t) })
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for (r.http == "" || r.ui == "") && sc.Scan() {
		if m := httpLine.FindStringSubmatch(sc.Text()); m != nil {
			r.http = m[1]
		}
		if m := uiLine.FindStringSubmatch(sc.Text()); m != nil {
			r.ui = m[1]
		}
	}
	if r.http == "" || r.ui == "" {
		t.Fatalf("mosemu run did not print its addresses")
	}
	go io.Copy(io.Discard, out)
	return r
}

func (r *running) stop(t *testing.T) {
	if r.cmd.ProcessState != nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("mosemu run exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		r.cmd.Process.Kill()
		t.Error("mosemu run did not stop on SIGTERM")
	}
}

func rpcCall(t *testing.T, addr, method string, params any) string {
	t.Helper()
	b, _ := json.Marshal(params)
	resp, err := http.Post("http://"+addr+"/rpc/"+method, "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s %s", method, resp.Status, out)
	}
	return string(out)
}

// TestSnapshotEndToEnd drives the binary: a snapshot is refused while the
// device runs in another process, taken through the running process's lab
// console, listed, and restored by run --reset-to.
func TestSnapshotEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildMosemu(t)
	state := filepath.Join(t.TempDir(), "seat")
	r := startRun(t, bin, "--state", state)

	out, err := exec.Command(bin, "snapshot", "save", "--state", state, "clean").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "running") {
		t.Fatalf("snapshot save while running: %v %s", err, out)
	}
	req, _ := http.NewRequest("POST", "http://"+r.ui+"/api/action", strings.NewReader(`{"action":"snapshot","name":"clean"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "http://"+r.ui)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("snapshot through the lab console: %v %v", resp, err)
	}
	resp.Body.Close()
	rpcCall(t, r.http, "FS.Put", map[string]any{"filename": "dirty.txt", "data": base64.StdEncoding.EncodeToString([]byte("x"))})
	if !strings.Contains(rpcCall(t, r.http, "FS.List", nil), "dirty.txt") {
		t.Fatal("dirty.txt not written")
	}
	r.stop(t)

	out, err = exec.Command(bin, "snapshot", "list", "--state", state).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "clean") {
		t.Fatalf("snapshot list: %v %s", err, out)
	}
	r = startRun(t, bin, "--state", state, "--reset-to", "clean")
	if strings.Contains(rpcCall(t, r.http, "FS.List", nil), "dirty.txt") {
		t.Fatal("dirty.txt survived run --reset-to clean")
	}
	r.stop(t)
	out, err = exec.Command(bin, "snapshot", "restore", "--state", state, "nosuch").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `no snapshot "nosuch"`) {
		t.Fatalf("restore of a missing snapshot: %v %s", err, out)
	}
}

// TestLabEndToEnd drives the binary through a lab as a trainer would:
// lab start, lab check (exit status 2, not yet), the console's live goals,
// the documented fix over RPC, lab check (exit status 0).
func TestLabEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildMosemu(t)
	state := filepath.Join(t.TempDir(), "lab")
	labFile := filepath.Join("..", "..", "labs", "lock-rpc.yaml")
	if out, err := exec.Command(bin, "lab", "start", labFile, "--state", state).CombinedOutput(); err != nil {
		t.Fatalf("lab start: %v %s", err, out)
	}
	check := func() (int, string) {
		out, err := exec.Command(bin, "lab", "check", labFile, "--state", state).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := check(); code != 2 || !strings.Contains(out, "not yet") {
		t.Fatalf("lab check before the fix: exit %d\n%s", code, out)
	}
	r := startRun(t, bin, "--state", state, "--lab", labFile)
	req, _ := http.NewRequest("POST", "http://"+r.ui+"/api/action", strings.NewReader(`{"action":"check"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Result struct {
			Results struct {
				Goals []struct{ Passed bool }
			}
		}
	}
	json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if n := len(res.Result.Results.Goals); n != 6 {
		t.Fatalf("lab console check: %d goals", n)
	}
	// The documented fix (mos put / config-set, here over HTTP RPC).
	sum := "joe:myproduct:" + md5hex("joe:myproduct:secret") + "\n"
	rpcCall(t, r.http, "FS.Put", map[string]any{"filename": "rpc_auth.txt", "data": base64.StdEncoding.EncodeToString([]byte(sum))})
	rpcCall(t, r.http, "FS.Put", map[string]any{"filename": "rpc_acl.json", "data": base64.StdEncoding.EncodeToString([]byte(`[{"method":"Sys.GetInfo","acl":"*"},{"method":"FS.*","acl":"+joe"},{"method":"*","acl":"-*"}]`))})
	rpcCall(t, r.http, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"auth_domain": "myproduct", "auth_file": "rpc_auth.txt", "acl_file": "rpc_acl.json"}}, "save": true})
	// Graded while the seat runs: lab check works on a copy.
	if code, out := check(); code != 0 {
		t.Fatalf("lab check after the fix: exit %d\n%s", code, out)
	}
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}
