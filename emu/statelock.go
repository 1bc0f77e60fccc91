package emu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the advisory lock a running device holds in its state
// directory; it contains the holder's pid.
const LockFile = ".lock"

// ErrStateInUse is returned by New when another device (in this process or
// another) holds the state directory.
var ErrStateInUse = errors.New("state directory in use")

// stateLock is an flock(2) on the state directory's lock file, released by
// unlock or when the process dies (kill -9 included).
type stateLock struct{ f *os.File }

func lockState(dir string) (*stateLock, error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		holder := "another process"
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b[:n]))); perr == nil {
			holder = "process " + strconv.Itoa(pid)
			if pid == os.Getpid() {
				holder += " (this one)"
			}
		}
		return nil, fmt.Errorf("emu: %w: %s is used by %s; stop it or use another --state", ErrStateInUse, dir, holder)
	}
	// The pid is informational (for the message above): the lock holds
	// whether or not it could be written.
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &stateLock{f: f}, nil
}

func (l *stateLock) unlock() {
	if l == nil {
		return
	}
	l.f.Truncate(0)
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}
