package mqtt

import (
	"net"
	"testing"
	"time"
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 64))
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	if err := Probe(l.Addr().String(), 2*time.Second); err == nil {
		t.Fatal("Probe took an HTTP server for a broker")
	}
	addr := l.Addr().String()
	l.Close()
	if err := Probe(addr, 2*time.Second); err == nil {
		t.Fatal("Probe of a closed port succeeded")
	}
}
