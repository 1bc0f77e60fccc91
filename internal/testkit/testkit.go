// Package testkit holds the test helpers that the tests of several
// packages share: a log buffer safe for concurrent use, real peer tools
// that skip a test outside CI and fail it in CI, loopback listeners and a
// real mosquitto broker. It imports only the standard library, so that the
// tests of every package can use it without an import cycle.
package testkit

import (
	"bytes"
	"regexp"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads: a
// device's console or a logger's sink that a test reads while it is written.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what has been written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Reset empties the buffer.
func (s *SyncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// WaitFor waits up to 10 s for the buffer to match the regular expression
// re and fails the test, printing the buffer, when it does not.
func (s *SyncBuffer) WaitFor(t testing.TB, re string) {
	t.Helper()
	r := regexp.MustCompile(re)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r.MatchString(s.String()) {
			return
		}
	}
	t.Fatalf("console never matched %q:\n%s", re, s.String())
}

// WaitUntil polls cond every 20 ms for up to 10 s and fails the test,
// naming what it waited for, when cond never holds.
func WaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
