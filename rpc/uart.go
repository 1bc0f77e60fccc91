package rpc

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"strconv"
	"sync"
)

// UARTChannel is the device side of RPC over a serial port
// (mgos_rpc_channel_uart): frames delimited by `"""` (or newlines), an
// optional 8-hex-digit CRC32 after the JSON, the EOF handshake, and
// console output interleaved between frames only.
type UARTChannel struct {
	// Out receives whole writes (a frame and its delimiters in one call);
	// the serial port never splits them, so log lines cannot interleave.
	Out      io.Writer
	Handler  FrameHandler
	Log      *slog.Logger
	Info     string // "UART0"
	MaxFrame func() int

	mu       sync.Mutex
	buf      []byte
	delim1   bool // `"""` seen: compat framing on replies
	crcUsed  bool
	pendingN bool // a '\n' to send before the next output
	work     chan []byte
	once     sync.Once
}

const eof = 0x04

// Feed passes bytes received on the UART.
func (u *UARTChannel) Feed(p []byte) {
	u.once.Do(func() {
		u.work = make(chan []byte, 64)
		go u.worker(u.work)
	})
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range p {
		if c >= 0x80 { // garbage (e.g. a baud-rate mismatch) resets the buffer
			u.buf = u.buf[:0]
			continue
		}
		u.buf = append(u.buf, c)
	}
	if bytes.Contains(u.buf, []byte(`"""`)) {
		u.delim1 = true
	}
	for {
		var chunk []byte
		if i := bytes.Index(u.buf, []byte(`"""`)); i >= 0 {
			chunk, u.buf = append([]byte(nil), u.buf[:i]...), u.buf[i+3:]
		} else if i := bytes.IndexByte(u.buf, '\n'); i >= 0 && !u.delim1 {
			chunk, u.buf = append([]byte(nil), u.buf[:i]...), u.buf[i+1:]
		} else {
			break
		}
		u.chunk(chunk)
	}
	if max := u.maxFrame(); len(u.buf) > max+6 {
		u.Log.Error("Incoming frame is too big, dropping.", "src", "mgos_rpc_channel_uart.c:102")
		u.buf = u.buf[:0]
	}
}

func (u *UARTChannel) maxFrame() int {
	if u.MaxFrame != nil {
		if n := u.MaxFrame(); n > 0 {
			return n
		}
	}
	return 4096
}

// chunk handles one delimited chunk; u.mu is held.
func (u *UARTChannel) chunk(c []byte) {
	if len(c) == 0 {
		return
	}
	if len(bytes.TrimSpace(c)) == 0 {
		u.pendingN = true
		return
	}
	if len(c) == 1 && c[0] == eof {
		u.send([]byte{eof}, false)
		return
	}
	start := bytes.IndexByte(c, '{')
	end := bytes.LastIndexByte(c, '}')
	if start < 0 || end < start {
		return
	}
	frame, meta := c[start:end+1], bytes.TrimSpace(c[end+1:])
	if len(meta) >= 8 {
		want, err := strconv.ParseUint(string(meta[:8]), 16, 32)
		if err != nil || uint32(want) != crc32.ChecksumIEEE(frame) {
			u.Log.Warn("Corrupted frame", "src", "mgos_rpc_channel_uart.c:127")
			return
		}
		u.crcUsed = true
	}
	select {
	case u.work <- frame:
	default:
		u.Log.Error("UART RPC queue full, dropping frame", "src", "mg_rpc.c:560")
	}
}

// worker dispatches frames in arrival order without blocking the reader.
func (u *UARTChannel) worker(work <-chan []byte) {
	ch := ChannelInfo{Type: ChanUART, Info: u.Info, Persistent: true}
	for f := range work {
		reply, err := u.Handler.HandleFrame(context.Background(), ch, f)
		if err != nil || reply == nil {
			continue
		}
		u.mu.Lock()
		u.send(reply, u.crcUsed)
		u.mu.Unlock()
	}
}

// send writes one frame in the framing the host used; u.mu is held.
func (u *UARTChannel) send(data []byte, withCRC bool) {
	var b bytes.Buffer
	if u.pendingN {
		b.WriteByte('\n')
		u.pendingN = false
	}
	b.WriteByte('\n')
	if u.delim1 {
		b.WriteString(`"""`)
	}
	b.Write(data)
	if withCRC {
		fmt.Fprintf(&b, "%08x", crc32.ChecksumIEEE(data))
	}
	if u.delim1 {
		b.WriteString(`"""`)
	}
	b.WriteByte('\n')
	u.Out.Write(b.Bytes())
}

// Close stops the dispatch worker.
func (u *UARTChannel) Close() {
	u.once.Do(func() {})
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.work != nil {
		close(u.work)
		u.work = nil
	}
}
