package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/rpc/client"
)

// mosemu returns a command running this test binary as the mosemu binary.
func mosemu(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), mosemuEnv+"=1")
	return cmd
}

// runningDevice is a `mosemu run` child process.
type runningDevice struct {
	cmd    *exec.Cmd
	banner string // stdout up to the "RPC over MQTT" line
	done   chan struct{}
}

// startMosemuRun starts `mosemu run -q ARGS` and reads its banner.
func startMosemuRun(t *testing.T, args ...string) *runningDevice {
	t.Helper()
	cmd := mosemu(append([]string{"run", "-q", "--http", "127.0.0.1:0"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &runningDevice{cmd: cmd, done: make(chan struct{})}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, out)
	}()
	timeout := time.After(30 * time.Second)
	for !strings.Contains(d.banner, "RPC over MQTT") {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("mosemu run %v exited: %s\n%s", args, d.banner, stderr.String())
			}
			d.banner += l + "\n"
		case <-timeout:
			cmd.Process.Kill()
			t.Fatalf("no banner from mosemu run %v: %s", args, d.banner)
		}
	}
	go func() {
		for range lines {
		}
		cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop sends SIGINT (Ctrl-C) and waits for the exit.
func (d *runningDevice) stop(t *testing.T) {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		t.Error("mosemu run ignored SIGINT")
		<-d.done
	}
}

func ping(t *testing.T, port string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, port)
	if err != nil {
		t.Fatalf("dial %s: %v", port, err)
	}
	defer c.Close()
	res, err := c.Call(ctx, "RPC.Ping", nil)
	if err != nil {
		t.Fatalf("RPC.Ping on %s: %v", port, err)
	}
	return string(res)
}

// TestSerialLinkAndSharedBroker starts a device: STATE/serial points to its
// pty, the banner prints it, RPC works through it, and it goes away on
// Ctrl-C. A second device finds the first one's broker and says so; the
// first device, restarted, gets a new pty behind the same path.
func TestSerialLinkAndSharedBroker(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "a")
	broker := testkit.FreeAddr(t)
	a := startMosemuRun(t, "--state", state, "--broker-addr", broker)
	link := filepath.Join(state, emu.SerialLinkFile)
	pty, err := os.Readlink(link)
	if err != nil || !strings.HasPrefix(pty, "/dev/") {
		t.Fatalf("%s -> %q, %v", link, pty, err)
	}
	if want := "mos --port " + link + " console"; !strings.Contains(a.banner, want) || !strings.Contains(a.banner, "embedded broker on "+broker) {
		t.Fatalf("banner lacks %q or the broker line %s:\n%s", want, broker, a.banner)
	}
	if got := ping(t, link); !strings.Contains(got, "UART0") {
		t.Fatalf("RPC.Ping through %s = %s", link, got)
	}
	if out, err := mosemu("factory-reset", "--state", state).CombinedOutput(); err == nil || !strings.Contains(string(out), "running") {
		t.Fatalf("factory-reset of a running device: %v %s", err, out)
	}

	own := filepath.Join(dir, "b.serial")
	b := startMosemuRun(t, "--state", filepath.Join(dir, "b"), "--broker-addr", broker, "--serial-link", own)
	if !strings.Contains(b.banner, "using the broker already answering on "+broker) || !strings.Contains(b.banner, "mqtt://"+broker+"/") {
		t.Fatalf("second device did not take the first one's broker:\n%s", b.banner)
	}
	if _, err := os.Readlink(own); err != nil {
		t.Fatalf("--serial-link: %v", err)
	}
	b.stop(t)
	if _, err := os.Lstat(own); !os.IsNotExist(err) {
		t.Fatalf("%s left behind after exit: %v", own, err)
	}

	a.stop(t)
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Fatalf("%s left behind after exit: %v", link, err)
	}
	startMosemuRun(t, "--state", state, "--broker-addr", broker)
	if got := ping(t, link); !strings.Contains(got, "UART0") {
		t.Fatalf("after a restart, RPC.Ping through %s = %s", link, got)
	}
}

// TestBrokerAddrTakenByNotABroker: the device says what it did instead.
func TestBrokerAddrTakenByNotABroker(t *testing.T) {
	l := testkit.Serve(t, func(c net.Conn) {
		c.Write([]byte("SSH-2.0-OpenSSH\r\n"))
		c.Close()
	})
	d := startMosemuRun(t, "--state", t.TempDir(), "--broker-addr", l.Addr().String())
	if !strings.Contains(d.banner, l.Addr().String()+" is taken by something that is not an MQTT broker") {
		t.Fatalf("banner does not say the broker address was taken:\n%s", d.banner)
	}
}

func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	e8266 := filepath.Join(dir, "e8266")
	d, err := emu.New(emu.Options{StateDir: e8266, Arch: "esp8266"})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "extra-arg"}, `"mosemu run" takes no arguments, got "extra-arg"`},
		{[]string{"efuse", "dump", "--state", missing}, "no device state at " + missing},
		{[]string{"efuse", "dump", "--state", e8266}, "holds an esp8266 device: it has no efuses"},
		{[]string{"flash", "dump", "--state", missing, "0", "16"}, "no device state at " + missing},
		{[]string{"flash", "dump", "--state", e8266, "0x3ffff0", "32"}, "beyond the 4194304-byte flash"},
		{[]string{"flash", "dump", "0x1000"}, `"mosemu flash dump" takes 2 arguments`},
		{[]string{"factory-reset", "--state", missing}, "is not a device state directory"},
	} {
		out, err := mosemu(tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("mosemu %s: %v\n%s\nwant an error saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a command created the missing state directory %s", missing)
	}
}

// TestFlashDumpOfRunningDevice dumps the flash of a running device that has
// just written a file: the dump shows the device's flash as it is, and the
// image on disk is not modified.
func TestFlashDumpOfRunningDevice(t *testing.T) {
	dir := t.TempDir()
	d, err := emu.New(emu.Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://"+d.HTTPAddr()+"/rpc")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call(ctx, "FS.Put", map[string]any{"filename": "x.txt", "data": "aGVsbG8="}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, emu.FlashFile)
	before, _ := os.Stat(img)
	out, err := mosemu("flash", "dump", "--state", dir, "0x190000", "0x40000").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 0x40000)
	d.Flash().ReadAt(want, 0x190000)
	if !bytes.Equal(out, want) {
		t.Fatal("flash dump differs from the running device's flash")
	}
	if after, _ := os.Stat(img); !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Fatal("flash dump modified the flash image")
	}
}

func TestVersion(t *testing.T) {
	out, err := mosemu("--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "mosemu ") || !strings.Contains(string(out), runtime.Version()) {
		t.Fatalf("--version = %q", out)
	}
}

func TestStampWriter(t *testing.T) {
	var b bytes.Buffer
	w := &stampWriter{w: &b, layout: time.StampMilli}
	if n, err := w.Write([]byte("mgos_init.c:24          one\ntwo\n")); n != 32 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	re := regexp.MustCompile(`^\[[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d\.\d{3}\] mgos_init.c:24          one\n\[[^]]+\] two\n$`)
	if !re.Match(b.Bytes()) {
		t.Fatalf("stamped lines: %q", b.String())
	}
}
