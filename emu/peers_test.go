package emu

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
)

// missingPeer handles an interop test whose real peer (mosquitto, node and
// esptool-js, ...) is not installed: in CI (CI=true) the test fails; outside
// CI it skips with one line that is printed on stderr too, so that `go
// test` without -v (make test) shows what did not run.
func missingPeer(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: .ci/deps.sh should have installed it)", msg)
	}
	fmt.Fprintf(os.Stderr, "%s: SKIP: %s\n", t.Name(), msg)
	t.Skip(msg)
}

// peerNote is missingPeer for an optional part of a test: it fails in CI
// and, outside CI, prints one line on stderr and lets the test go on.
func peerNote(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: .ci/deps.sh should have installed it)", msg)
	}
	fmt.Fprintf(os.Stderr, "%s: NOTE: %s\n", t.Name(), msg)
	t.Log(msg)
}

// lockedBuffer is a bytes.Buffer safe for the console's concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
