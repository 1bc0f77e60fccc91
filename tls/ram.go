package devtls

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
)

// Per-connection RAM, after mbedTLS as configured by Mongoose OS: with the
// default static buffers each TLS connection holds an input and an output
// record buffer of MBEDTLS_SSL_IN/OUT_CONTENT_LEN (16 KiB each) plus the
// SSL context, session and handshake state; the dynamic-buffer patch frees
// the record buffers between records, leaving about 1 KiB while idle.
const (
	CostTCP        = 1200                  // mongoose connection + mbufs
	CostTLSStatic  = 2*(16384+29) + 8*1024 // ~40 KiB
	CostTLSDynamic = 1024 + 4*1024         // idle buffers + session
	Reserve        = 16 * 1024             // heap the rest of the firmware needs
)

// RAM is a device's heap as the firmware sees it.
type RAM struct {
	mu                   sync.Mutex
	total, free, minFree int
	conns                int // open connections charged by a Listener
	reserve              int
}

// Conns returns how many connections accepted by a Listener are open.
func (r *RAM) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns
}

func (r *RAM) countConn(d int) {
	r.mu.Lock()
	r.conns += d
	r.mu.Unlock()
}

// NewRAM returns a heap of total bytes with free available after boot,
// keeping Reserve bytes for the rest of the firmware.
func NewRAM(total, free int) *RAM { return NewRAMReserve(total, free, Reserve) }

// NewRAMReserve is NewRAM with the board's own reserve: an allocation
// that would leave less than reserve bytes free fails.
func NewRAMReserve(total, free, reserve int) *RAM {
	return &RAM{total: total, free: free, minFree: free, reserve: reserve}
}

// Alloc takes n bytes if that leaves the reserve free.
func (r *RAM) Alloc(n int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.free-n < r.reserve {
		return false
	}
	r.free -= n
	r.minFree = min(r.minFree, r.free)
	return true
}

// ReserveSize returns the bytes an allocation may not eat into.
func (r *RAM) ReserveSize() int { return r.reserve }

// Release returns n bytes.
func (r *RAM) Release(n int) {
	r.mu.Lock()
	r.free += n
	r.mu.Unlock()
}

// Stats returns total, free and minimum free heap.
func (r *RAM) Stats() (total, free, minFree int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total, r.free, r.minFree
}

// Listener charges every accepted connection cost bytes of RAM, refusing
// (closing at once) connections that do not fit, and refunds on close.
type Listener struct {
	net.Listener
	RAM  *RAM
	Cost int
	Log  *slog.Logger
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.RAM.Alloc(l.Cost) {
			l.RAM.countConn(1)
			return &ramConn{Conn: c, ram: l.RAM, cost: l.Cost}, nil
		}
		_, free, _ := l.RAM.Stats()
		l.Log.Error(fmt.Sprintf("Out of memory: connection from %s needs %d bytes, %d free of which %d are the firmware's reserve; closing", c.RemoteAddr(), l.Cost, free, l.RAM.ReserveSize()),
			"src", "mongoose.c:2470", "finding", "out of memory")
		c.Close()
	}
}

type ramConn struct {
	net.Conn
	ram  *RAM
	cost int
	once sync.Once
}

func (c *ramConn) Close() error {
	c.once.Do(func() { c.ram.Release(c.cost); c.ram.countConn(-1) })
	return c.Conn.Close()
}
