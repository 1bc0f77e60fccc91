package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu"
)

// runArgs runs `mosemu run args...` in-process and returns its error.
func runArgs(t *testing.T, args ...string) error {
	t.Helper()
	c := runCmd()
	c.SetArgs(append([]string{"-q", "--broker=false"}, args...))
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	return c.Execute()
}

// TestRunRefusesToStart: the cases where `mosemu run` must fail (and so
// exit non-zero) instead of announcing a device: a bad flag writes
// nothing, a state directory in use names its holder, an HTTP address in
// use is reported.
func TestRunRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	t.Run("bad arch", func(t *testing.T) {
		state := filepath.Join(dir, "new")
		err := runArgs(t, "--arch", "esp33", "--state", state, "--http", "127.0.0.1:0")
		if err == nil || !strings.Contains(err.Error(), `unknown arch "esp33"`) {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Fatalf("state created for a refused flag: %v", err)
		}
	})
	t.Run("bad http address", func(t *testing.T) {
		state := filepath.Join(dir, "new2")
		if err := runArgs(t, "--state", state, "--http", "nonsense"); err == nil {
			t.Fatal("accepted --http nonsense")
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Fatalf("state created for a refused flag: %v", err)
		}
	})
	t.Run("state in use", func(t *testing.T) {
		state := filepath.Join(dir, "busy")
		d, err := emu.New(emu.Options{StateDir: state, HTTPAddr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		err = runArgs(t, "--state", state, "--http", "127.0.0.1:0")
		if err == nil || !strings.Contains(err.Error(), "is used by process "+strconv.Itoa(os.Getpid())) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("http address in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		err = runArgs(t, "--state", filepath.Join(dir, "bind"), "--http", l.Addr().String())
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("err = %v", err)
		}
	})
}
