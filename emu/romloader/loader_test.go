package romloader

import (
	"bytes"
	"compress/zlib"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"os"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
)

type fakeChip struct {
	esp32 bool
	fl    *flash.Chip
	regs  map[uint32]uint32
}

func (c *fakeChip) ESP32() bool                  { return c.esp32 }
func (c *fakeChip) Flash() flash.Device          { return c.fl }
func (c *fakeChip) EncryptedFlash() flash.Device { return nil }
func (c *fakeChip) ReadReg(a uint32) (uint32, bool) {
	v, ok := c.regs[a]
	return v, ok
}
func (c *fakeChip) WriteReg(a, v uint32) bool {
	if _, ok := c.regs[a]; ok {
		c.regs[a] = v
		return true
	}
	return false
}

func request(cmd byte, data []byte, sum uint32) []byte {
	h := make([]byte, 8)
	h[1] = cmd
	binary.LittleEndian.PutUint16(h[2:], uint16(len(data)))
	binary.LittleEndian.PutUint32(h[4:], sum)
	return Encode(append(h, data...))
}

func words(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

// responses decodes the loader's output into frames.
func responses(b []byte) [][]byte {
	var d Decoder
	return d.Feed(b)
}

func newLoader(esp32 bool) (*Loader, *bytes.Buffer, *fakeChip) {
	var out bytes.Buffer
	c := &fakeChip{esp32: esp32, fl: flash.NewMemory(4 << 20), regs: map[uint32]uint32{0x3FF5A004: 0xc40031bc}}
	return New(c, &out), &out, c
}

func TestSyncAndRegistersGolden(t *testing.T) {
	l, out, _ := newLoader(true)
	l.Feed(request(CmdSync, append([]byte{7, 7, 0x12, 0x20}, bytes.Repeat([]byte{0x55}, 32)...), 0))
	l.Feed(request(CmdReadReg, words(magicReg), 0))
	l.Feed(request(CmdReadReg, words(0x3FF5A004), 0))
	l.Feed(request(0x55, nil, 0)) // unknown command
	golden := "testdata/esp32-sync-readreg.bin"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(golden, out.Bytes(), 0o644)
	}
	want, _ := os.ReadFile(golden)
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("output differs from %s:\n%x", golden, out.Bytes())
	}
	fr := responses(out.Bytes())
	if len(fr) != 11 || binary.LittleEndian.Uint32(fr[8][4:]) != MagicESP32 || binary.LittleEndian.Uint32(fr[9][4:]) != 0xc40031bc {
		t.Fatalf("%d frames", len(fr))
	}
	if last := fr[10]; !bytes.Equal(last[8:], []byte{1, errInvalidMsg, 0, 0}) {
		t.Fatalf("unknown command answered %x", last)
	}
	// ESP8266: two status bytes.
	l8, out8, _ := newLoader(false)
	l8.Feed(request(CmdReadReg, words(magicReg), 0))
	if f := responses(out8.Bytes())[0]; len(f) != 10 || binary.LittleEndian.Uint32(f[4:]) != MagicESP8266 {
		t.Fatalf("esp8266 reply %x", f)
	}
}

func flashWrite(t *testing.T, l *Loader, off uint32, data []byte, deflate bool) {
	t.Helper()
	payload := data
	begin, dcmd, end := byte(CmdFlashBegin), byte(CmdFlashData), byte(CmdFlashEnd)
	if deflate {
		var z bytes.Buffer
		w, _ := zlib.NewWriterLevel(&z, 9)
		w.Write(data)
		w.Close()
		payload = z.Bytes()
		begin, dcmd, end = CmdFlashDeflBeg, CmdFlashDeflData, CmdFlashDeflEnd
	}
	const bs = 0x400
	n := (len(payload) + bs - 1) / bs
	l.Feed(request(begin, words(uint32(len(data)), uint32(n), bs, off), 0))
	for i := 0; i < n; i++ {
		blk := payload[i*bs : min((i+1)*bs, len(payload))]
		if !deflate {
			blk = append(blk, bytes.Repeat([]byte{0xFF}, bs-len(blk))...)
		}
		l.Feed(request(dcmd, append(words(uint32(len(blk)), uint32(i), 0, 0), blk...), checksum(blk)))
	}
	if _, done := l.Feed(request(end, words(1), 0)); !done {
		t.Fatal("FLASH_END(run) did not end the session")
	}
}

func TestFlashWriteAndMD5(t *testing.T) {
	for _, deflate := range []bool{false, true} {
		l, out, c := newLoader(true)
		data := bytes.Repeat([]byte("mosemu flash "), 3000)
		flashWrite(t, l, 0x10000, data, deflate)
		got := make([]byte, len(data))
		c.fl.ReadAt(got, 0x10000)
		if !bytes.Equal(got, data) {
			t.Fatalf("deflate=%v: flash differs", deflate)
		}
		for _, f := range responses(out.Bytes()) {
			if f[len(f)-4] != 0 {
				t.Fatalf("deflate=%v: command %#x failed: %x", deflate, f[1], f)
			}
		}
		out.Reset()
		l.Feed(request(CmdSPIFlashMD5, words(0x10000, uint32(len(data)), 0, 0), 0))
		sum := md5.Sum(data)
		if f := responses(out.Bytes())[0]; string(f[8:40]) != hex.EncodeToString(sum[:]) {
			t.Fatalf("MD5 reply %q", f[8:40])
		}
	}
}

func TestBadPackets(t *testing.T) {
	l, out, _ := newLoader(true)
	l.Feed(request(CmdFlashData, words(4, 0, 0, 0, 1), 0)) // data before begin
	l.Feed(request(CmdReadReg, nil, 0))                    // truncated
	l.Feed(request(CmdFlashBegin, words(0x1000, 1, 0x400, 0), 0))
	l.Feed(request(CmdFlashData, append(words(4, 0, 0, 0), 1, 2, 3, 4), 0)) // bad checksum
	l.Feed([]byte{0xC0, 0xDB, 0x01, 0xC0})                                  // bad escape: ignored
	fr := responses(out.Bytes())
	want := []byte{errInvalidParam, errInvalidMsg, 0, errChecksum}
	if len(fr) != len(want) {
		t.Fatalf("%d replies", len(fr))
	}
	for i, f := range fr {
		if f[len(f)-3] != want[i] {
			t.Errorf("reply %d: %x", i, f)
		}
	}
}

func FuzzLoader(f *testing.F) {
	f.Add(request(CmdSync, append([]byte{7, 7, 0x12, 0x20}, bytes.Repeat([]byte{0x55}, 32)...), 0))
	f.Add(request(CmdFlashDeflBeg, words(100, 1, 0x400, 0), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, _, _ := newLoader(true)
		l.Feed(b)
		if l.inflater != nil {
			l.inflater.finish()
		}
	})
}

func FuzzSLIP(f *testing.F) {
	f.Add([]byte{1, 0xC0, 0xDB, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Decoder
		fr := d.Feed(Encode(b))
		if len(b) > 0 && len(b) <= MaxFrame && (len(fr) != 1 || !bytes.Equal(fr[0], b)) {
			t.Fatalf("round trip of %x gave %x", b, fr)
		}
	})
}

// TestEsptoolStub uploads a stub that is not mos's: the loader answers
// "OHAI" and speaks the esptool stub protocol (2 status bytes, SYNC value 0,
// raw MD5, READ_FLASH streaming with acks).
func TestEsptoolStub(t *testing.T) {
	l, out, c := newLoader(true)
	code := make([]byte, 0x1800)
	l.Feed(request(CmdMemBegin, words(uint32(len(code)), 1, 0x1800, 0x400a8000), 0))
	l.Feed(request(CmdMemData, append(words(uint32(len(code)), 0, 0, 0), code...), checksum(code)))
	l.Feed(request(CmdMemEnd, words(0, 0x400a902c), 0))
	fr := responses(out.Bytes())
	if len(fr) != 4 || string(fr[3]) != "OHAI" {
		t.Fatalf("no OHAI: %q", fr)
	}
	out.Reset()
	l.Feed(request(CmdSync, append([]byte{7, 7, 0x12, 0x20}, bytes.Repeat([]byte{0x55}, 32)...), 0))
	if fr := responses(out.Bytes()); len(fr) != 8 || binary.LittleEndian.Uint32(fr[0][4:]) != 0 || len(fr[0]) != 10 {
		t.Fatalf("stub SYNC: %x", fr[0])
	}
	data := bytes.Repeat([]byte("esptool!"), 1000)
	c.fl.WriteAt(data, 0x2000)
	out.Reset()
	l.Feed(request(CmdReadFlash, words(0x2000, uint32(len(data)), 0x1000, 0x1000), 0))
	var got []byte
	for len(got) < len(data) {
		fr := responses(out.Bytes())
		out.Reset()
		for _, f := range fr {
			if f[0] == 0x01 && f[1] == CmdReadFlash { // the command's own response
				continue
			}
			got = append(got, f...)
		}
		l.Feed(Encode(words(uint32(len(got)))))
	}
	sum := md5.Sum(data)
	if fr := responses(out.Bytes()); !bytes.Equal(got, data) || len(fr) != 1 || !bytes.Equal(fr[0], sum[:]) {
		t.Fatalf("READ_FLASH: %d bytes, tail %x", len(got), fr)
	}
	out.Reset()
	l.Feed(request(CmdSPIFlashMD5, words(0x2000, uint32(len(data)), 0, 0), 0))
	if f := responses(out.Bytes())[0]; !bytes.Equal(f[8:24], sum[:]) || len(f) != 26 {
		t.Fatalf("stub MD5 reply %x", f)
	}
	out.Reset()
	l.Feed(request(CmdFlashBegin, words(0x1000, 1, 0x4000, 0x3000, 1), 0)) // encrypted, no engine
	if f := responses(out.Bytes())[0]; f[len(f)-2] != 1 {
		t.Fatalf("encrypted write without an engine accepted: %x", f)
	}
}
