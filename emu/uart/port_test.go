package uart

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mosemu/mosemu/internal/testkit"
)

func openHost(t *testing.T, p *Port) *os.File {
	t.Helper()
	f, err := os.OpenFile(p.Path(), os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { err = makeRaw(int(fd)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestPortRoundTrip(t *testing.T) {
	p, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var got testkit.SyncBuffer
	p.SetConsumer(func(b []byte) { got.Write(b) })
	p.SetSoftwareFlowControl(true)
	host := openHost(t, p)

	host.Write([]byte("hello\x13\x11 world"))
	p.Write([]byte("log line\n"))
	buf := make([]byte, 9)
	host.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := readFull(host, buf); err != nil || string(buf) != "log line\n" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got.String() == "hello world" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("device got %q", got.String())
}

func TestPortNobodyListening(t *testing.T) {
	p, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	line := bytes.Repeat([]byte("x"), 1000)
	for range 2000 { // 2 MB into a port nobody reads
		p.Write(line)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("writes blocked for %v", d)
	}
}

func TestXOFFPausesOutput(t *testing.T) {
	p, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetSoftwareFlowControl(true)
	host := openHost(t, p)
	host.Write([]byte{XOFF})
	time.Sleep(50 * time.Millisecond)
	p.Write([]byte("held"))
	buf := make([]byte, 4)
	host.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if n, _ := host.Read(buf); n != 0 {
		t.Fatalf("output not paused, read %q", buf[:n])
	}
	host.Write([]byte{XON})
	host.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := readFull(host, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after XON read %q, %v", buf, err)
	}
}

func readFull(f *os.File, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := f.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestBaudTiming: with a baud rate set, the port takes as long as a UART
// would (10 bits per byte) in both directions; the bounds checked are the
// lower ones only, which pacing guarantees.
func TestBaudTiming(t *testing.T) {
	p, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	f := openHost(t, p)
	p.SetBaud(11520) // 1152 bytes per second
	var mu sync.Mutex
	got := 0
	p.SetConsumer(func(b []byte) { mu.Lock(); got += len(b); mu.Unlock() })

	start := time.Now()
	p.Write(bytes.Repeat([]byte{'x'}, 576))
	buf := make([]byte, 1024)
	for n := 0; n < 576; {
		f.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := f.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("576 bytes out at 11520 baud in %v", d)
	}
	start = time.Now()
	f.Write(bytes.Repeat([]byte{'y'}, 576))
	for {
		mu.Lock()
		n := got
		mu.Unlock()
		if n == 576 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("only %d bytes in", n)
		}
		time.Sleep(time.Millisecond)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("576 bytes in at 11520 baud in %v", d)
	}
}
