package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// FreeAddr returns a loopback address with a port nobody listens on now.
// The port is below Linux's ephemeral range (32768-60999), so that no
// outgoing connection of another process takes it before the program
// under test binds it (a port from Listen(":0") is in that range).
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 22000+rand.IntN(10000))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port in 22000-31999")
	return ""
}

// Serve listens on a free loopback port and calls handle, in its accept
// loop, with each connection it accepts, until the test ends or the caller
// closes the returned listener. A handler that must not hold up the next
// connection starts a goroutine of its own.
func Serve(t testing.TB, handle func(net.Conn)) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			handle(c)
		}
	}()
	return l
}
