package devtls

import (
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Handshake latencies of real boards (public measurements of mbedTLS
// ECDHE handshakes): an ESP32 at 160-240 MHz takes about 1-3 s, an
// ESP8266 at 80 MHz about 7-15 s.
var (
	LatencyESP32   = [2]time.Duration{1 * time.Second, 3 * time.Second}
	LatencyESP8266 = [2]time.Duration{7 * time.Second, 15 * time.Second}
)

// SlowListener delays the first byte the device sends on every accepted
// connection by a random time in [Min, Max]: placed under the TLS layer it
// makes the server's handshake answer as slow as a real board's.
type SlowListener struct {
	net.Listener
	Min, Max time.Duration
}

// Accept implements net.Listener.
func (l *SlowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	d := l.Min
	if l.Max > l.Min {
		d += rand.N(l.Max - l.Min)
	}
	return &slowConn{Conn: c, delay: d}, nil
}

type slowConn struct {
	net.Conn
	once  sync.Once
	delay time.Duration
}

func (c *slowConn) Write(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.Conn.Write(p)
}
