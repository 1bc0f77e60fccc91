package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where every real
// peer must be installed.
func InCI() bool { return os.Getenv("CI") == "true" }

// MissingPeer handles a test whose real peer (mosquitto, openssl, node and
// esptool-js, chromium, ...) is not installed: in CI (CI=true) the test
// fails; outside CI it skips with one line that is printed on stderr too,
// so that `go test` without -v (make test) shows what did not run.
func MissingPeer(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := peerMissing(t, "SKIP", format, args...)
	t.Skip(msg)
}

// PeerNote is MissingPeer for an optional part of a test: it fails the
// test in CI and, outside CI, prints one line on stderr and lets the test
// go on.
func PeerNote(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := peerMissing(t, "NOTE", format, args...)
	t.Log(msg)
}

// peerMissing fails the test in CI; outside CI it prints the message on
// stderr, after the test's name and what (SKIP or NOTE), and returns it.
func peerMissing(t testing.TB, what, format string, args ...any) string {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI=true: .ci/deps.sh should have installed it)", msg)
	}
	fmt.Fprintf(os.Stderr, "%s: %s: %s\n", t.Name(), what, msg)
	return msg
}

// NeedTool returns the path of the first of names found on $PATH. When
// none is, it calls MissingPeer, naming names[0] and install, the way to
// install it (for example "apt-get install mosquitto-clients").
func NeedTool(t testing.TB, install string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := names[0] + " not installed"
	if install != "" {
		msg += " (" + install + ")"
	}
	MissingPeer(t, "%s", msg)
	return ""
}
