package mqtt

import (
	"net"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
)

func TestProbe(t *testing.T) {
	b, err := StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := Probe(b.Addr(), 2*time.Second); err != nil {
		t.Fatalf("Probe of the embedded broker: %v", err)
	}
	// Something that is not a broker: accepts, reads, answers garbage.
	l := testkit.Serve(t, func(c net.Conn) {
		c.Read(make([]byte, 64))
		c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
		c.Close()
	})
	if err := Probe(l.Addr().String(), 2*time.Second); err == nil {
		t.Fatal("Probe took an HTTP server for a broker")
	}
	addr := l.Addr().String()
	l.Close()
	if err := Probe(addr, 2*time.Second); err == nil {
		t.Fatal("Probe of a closed port succeeded")
	}
}

// FuzzProbe answers the probe's CONNECT with arbitrary bytes: Probe returns
// (nil only for a CONNACK accepting the client), never hangs or panics.
func FuzzProbe(f *testing.F) {
	f.Add([]byte{0x20, 2, 0, 0})
	f.Add([]byte{0x20, 2, 0, 5})
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	f.Add([]byte{0x20})
	f.Fuzz(func(t *testing.T, reply []byte) {
		// A listener of its own per input, answering every connection with
		// the same bytes: a stray connection (another test probing a port
		// that the kernel has since handed to this listener) cannot take
		// the reply meant for the probe.
		l := testkit.Serve(t, func(c net.Conn) {
			go func() {
				defer c.Close()
				c.Read(make([]byte, 256))
				c.Write(reply)
			}()
		})
		err := Probe(l.Addr().String(), 2*time.Second)
		ok := len(reply) >= 4 && reply[0] == 0x20 && reply[1] == 2 && reply[3] == 0
		if (err == nil) != ok {
			t.Fatalf("Probe with reply %x: %v", reply, err)
		}
	})
}
