package emu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// childStateEnv names the state directory on which a test binary started
// by childDevice runs a device.
const childStateEnv = "MOSEMU_CHILD_STATE"

// childDevice runs the test named test again in a child process that serves
// a device on dir (the test calls serveChildDevice first), and returns the
// child and the device's HTTP address. The caller kills the child.
func childDevice(t *testing.T, test, dir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), childStateEnv+"="+dir)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, _ := out.Read(buf)
	line := strings.TrimSpace(string(buf[:n]))
	addr, ok := strings.CutPrefix(line, "ADDR ")
	if !ok {
		t.Fatalf("child said %q", line)
	}
	return cmd, addr
}

// serveChildDevice is the child's side of childDevice: in a test binary
// started by it, it runs the device until the process is killed; elsewhere
// it returns at once.
func serveChildDevice() {
	dir := os.Getenv(childStateEnv)
	if dir == "" {
		return
	}
	d, err := New(Options{StateDir: dir, HTTPAddr: "127.0.0.1:0"})
	if err == nil {
		err = d.Start(context.Background())
	}
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("ADDR", d.HTTPAddr())
	select {}
}
