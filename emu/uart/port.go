// Package uart is the device's serial port: a pseudo-terminal whose slave
// side (/dev/pts/N) a host tool opens as it would a USB serial adapter.
//
// Output is queued and sent by one writer goroutine, so a log line or an RPC
// frame is always written whole (they never interleave) and a port nobody
// reads never blocks the device: like a real UART, bytes nobody listens to
// are lost. Input is handed to one consumer at a time (the firmware's RPC
// channel, or the ROM loader in download mode).
package uart

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// XON and XOFF are the software flow control bytes (rpc.uart.fc_type 2).
const (
	XON  = 0x11
	XOFF = 0x13
)

// queueLimit bounds the bytes waiting to be sent; more is dropped.
const queueLimit = 256 << 10

// dropAfter is how long the writer waits for the host to take bytes before
// dropping them: long enough for a slow reader (a busy host, the race
// detector), short enough that a port nobody reads keeps draining.
const dropAfter = 2 * time.Second

// Port is one emulated UART on a pty.
type Port struct {
	master, slave *os.File
	path          string

	mu       sync.Mutex
	cond     *sync.Cond
	queue    [][]byte
	queued   int
	paused   bool // XOFF received
	swFlow   bool // XON/XOFF honoured
	closed   bool
	consumer func([]byte)
	baud     int // with baud timing: bits per second both ways, else 0

	done chan struct{}
}

// Open creates a pty-backed port. The slave side is kept open (and raw) by
// the port itself so that the port survives host tools opening and closing it.
func Open() (*Port, error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, err
	}
	if err := makeRaw(int(s.Fd())); err != nil {
		m.Close()
		s.Close()
		return nil, err
	}
	// pty.Open leaves the master in blocking mode (File.Fd does that); make a
	// pollable copy so that deadlines work and Close interrupts a Read.
	fd, err := unix.Dup(int(m.Fd()))
	m.Close()
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	m = os.NewFile(uintptr(fd), "/dev/ptmx")
	p := &Port{master: m, slave: s, path: s.Name(), done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	go p.writer()
	go p.reader()
	return p, nil
}

// makeRaw puts the terminal in raw mode (no echo, no line discipline, no
// output processing), as a serial port is.
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// Path returns the device path host tools open, e.g. /dev/pts/3.
func (p *Port) Path() string { return p.path }

// SetSoftwareFlowControl turns XON/XOFF handling on or off. When on, XON and
// XOFF bytes are removed from the input and pause/resume output.
func (p *Port) SetSoftwareFlowControl(on bool) {
	p.mu.Lock()
	p.swFlow = on
	if !on {
		p.paused = false
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// SetBaud makes the port as slow as a UART at baud (10 bits per byte, both
// directions); 0 turns the pacing off (a pty is otherwise as fast as the
// host). It applies from the next chunk on.
func (p *Port) SetBaud(baud int) {
	p.mu.Lock()
	p.baud = max(baud, 0)
	p.mu.Unlock()
}

// pace sleeps as long as n bytes take on the wire at the current baud rate.
func (p *Port) pace(n int) {
	p.mu.Lock()
	baud := p.baud
	p.mu.Unlock()
	if baud > 0 && n > 0 {
		time.Sleep(time.Duration(n) * 10 * time.Second / time.Duration(baud))
	}
}

// SetConsumer sets the function that receives input bytes (nil drops them).
// The slice is only valid during the call.
func (p *Port) SetConsumer(f func([]byte)) {
	p.mu.Lock()
	p.consumer = f
	p.mu.Unlock()
}

// Write queues b to be sent whole. It never blocks on the host.
func (p *Port) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, os.ErrClosed
	}
	if p.queued+len(b) > queueLimit {
		return len(b), nil // transmit buffer overflow: the bytes are lost
	}
	p.queue = append(p.queue, append([]byte(nil), b...))
	p.queued += len(b)
	p.cond.Broadcast()
	return len(b), nil
}

// WriteLog implements console.Sink.
func (p *Port) WriteLog(line []byte) { p.Write(line) }

// Flush waits until everything queued so far has been handed to the pty or
// dropped, or until timeout.
func (p *Port) Flush(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		empty := p.queued == 0 || p.closed
		p.mu.Unlock()
		if empty {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (p *Port) writer() {
	for {
		p.mu.Lock()
		for !p.closed && (len(p.queue) == 0 || p.paused) {
			p.cond.Wait()
		}
		if p.closed {
			p.mu.Unlock()
			return
		}
		b := p.queue[0]
		p.mu.Unlock()
		p.pace(len(b))

		for len(b) > 0 {
			p.master.SetWriteDeadline(time.Now().Add(dropAfter))
			n, err := p.master.Write(b)
			b = b[n:]
			if err != nil {
				break // nobody is reading: the rest of this chunk is lost
			}
		}

		p.mu.Lock()
		if len(p.queue) > 0 {
			p.queued -= len(p.queue[0])
			p.queue = p.queue[1:]
		}
		p.mu.Unlock()
	}
}

func (p *Port) reader() {
	defer close(p.done)
	buf := make([]byte, 4096)
	for {
		n, err := p.master.Read(buf)
		if n > 0 {
			p.pace(n)
			p.deliver(buf[:n])
		}
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			time.Sleep(10 * time.Millisecond) // EIO while no slave is open
		}
	}
}

func (p *Port) deliver(b []byte) {
	p.mu.Lock()
	if p.swFlow {
		out := b[:0]
		for _, c := range b {
			switch c {
			case XOFF:
				p.paused = true
			case XON:
				p.paused = false
				p.cond.Broadcast()
			default:
				out = append(out, c)
			}
		}
		b = out
	}
	f := p.consumer
	p.mu.Unlock()
	if f != nil && len(b) > 0 {
		f(b)
	}
}

// Close stops the port and releases the pty.
func (p *Port) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	p.master.Close()
	p.slave.Close()
	<-p.done
	return nil
}
