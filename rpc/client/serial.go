package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// serialTransport speaks mos's serial framing: handshake `"""\x04"""\n\n`
// until the device answers with an EOF frame, then `\n"""<json><crc>"""\n`.
type serialTransport struct {
	f    *os.File
	mu   sync.Mutex
	rx   []byte
	Junk func([]byte) // console output between frames
}

func dialSerial(path string) (*serialTransport, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var terr error
	rc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			terr = err
			return
		}
		t.Iflag = 0
		t.Oflag = 0
		t.Lflag = 0
		t.Cflag = unix.CS8 | unix.CREAD | unix.CLOCAL | unix.B115200
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		terr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
		if terr == nil {
			terr = unix.IoctlSetInt(int(fd), unix.TCFLSH, unix.TCIFLUSH)
		}
	})
	if terr != nil {
		f.Close()
		return nil, terr
	}
	return &serialTransport{f: f}, nil
}

// readFrame returns the next frame (JSON or a lone EOF byte) within d.
func (t *serialTransport) readFrame(deadline time.Time) ([]byte, error) {
	buf := make([]byte, 4096)
	for {
		if fr, ok := t.extract(); ok {
			return fr, nil
		}
		t.f.SetReadDeadline(deadline)
		n, err := t.f.Read(buf)
		t.rx = append(t.rx, buf[:n]...)
		if err != nil {
			return nil, err
		}
	}
}

// extract finds a frame: it starts at `"""` or '\n' immediately followed by
// '{' or 0x04 and ends at the next `"""` or '\n'; metadata after the last
// '}' holds the CRC.
func (t *serialTransport) extract() ([]byte, bool) {
	for i := 0; i < len(t.rx); i++ {
		var start int
		switch {
		case bytes.HasPrefix(t.rx[i:], []byte(`"""`)):
			start = i + 3
		case t.rx[i] == '\n':
			start = i + 1
		default:
			continue
		}
		if start >= len(t.rx) {
			return nil, false
		}
		if t.rx[start] != '{' && t.rx[start] != 0x04 {
			continue
		}
		rest := t.rx[start:]
		end := bytes.Index(rest, []byte(`"""`))
		if nl := bytes.IndexByte(rest, '\n'); nl >= 0 && (end < 0 || nl < end) {
			end = nl
		}
		if end < 0 {
			return nil, false
		}
		data := rest[:end]
		if t.Junk != nil && i > 0 {
			t.Junk(t.rx[:i])
		}
		t.rx = t.rx[start+end:]
		if data[0] == 0x04 {
			return []byte{0x04}, true
		}
		last := bytes.LastIndexByte(data, '}')
		frame, meta := data[:last+1], bytes.TrimSpace(data[last+1:])
		if len(meta) >= 8 {
			want, err := strconv.ParseUint(string(meta[:8]), 16, 32)
			if err != nil || uint32(want) != crc32.ChecksumIEEE(frame) {
				continue
			}
		}
		return append([]byte(nil), frame...), true
	}
	return nil, false
}

func (t *serialTransport) roundTrip(ctx context.Context, frame []byte, id int64) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(20 * time.Second)
	}
	// Handshake: EOF until the device echoes one.
	for shaken := false; !shaken; {
		if time.Now().After(deadline) {
			return nil, ErrTimeout
		}
		t.f.Write([]byte("\"\"\"\x04\"\"\"\n\n"))
		wait := time.Now().Add(200 * time.Millisecond)
		for {
			fr, err := t.readFrame(wait)
			if err != nil {
				break
			}
			if len(fr) == 1 && fr[0] == 0x04 {
				shaken = true
				break
			}
		}
	}
	t.f.Write([]byte(`"""`))
	out := fmt.Sprintf("\n\"\"\"%s%08x\"\"\"\n", frame, crc32.ChecksumIEEE(frame))
	if _, err := t.f.Write([]byte(out)); err != nil {
		return nil, err
	}
	for {
		fr, err := t.readFrame(deadline)
		if err != nil {
			return nil, ErrTimeout
		}
		var r struct {
			ID int64 `json:"id"`
		}
		if json.Unmarshal(fr, &r) == nil && r.ID == id {
			return fr, nil
		}
	}
}

func (t *serialTransport) Close() error { return t.f.Close() }
