package romloader

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
)

// countingWriter records each Write separately.
type countingWriter struct{ writes [][]byte }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func syncRequest() []byte {
	return request(CmdSync, append([]byte{7, 7, 0x12, 0x20}, bytes.Repeat([]byte{0x55}, 32)...), 0)
}

// upload8266 uploads a stub as mos does for the ESP8266 (its stub.json
// layout) and returns the loader.
func upload8266(t *testing.T, out *countingWriter) *Loader {
	t.Helper()
	c := &fakeChip{fl: flash.NewMemory(4 << 20), regs: map[uint32]uint32{}}
	l := New(c, out)
	for _, seg := range []struct {
		addr  uint32
		data  []byte
		entry uint32
	}{
		{0x40100000, words(115200, 921600), 0},
		{0x3fff7030, make([]byte, 4112), 0},
		{0x40100008, make([]byte, 7860), 0x40101ddc},
	} {
		l.Feed(request(CmdMemBegin, words(uint32(len(seg.data)), 2, 0x1000, seg.addr), 0))
		for i := 0; i*0x1000 < len(seg.data); i++ {
			blk := seg.data[i*0x1000 : min(len(seg.data), (i+1)*0x1000)]
			l.Feed(request(CmdMemData, append(words(uint32(len(blk)), uint32(i), 0, 0), blk...), checksum(blk)))
		}
		flag := uint32(1)
		if seg.entry != 0 {
			flag = 0
		}
		l.Feed(request(CmdMemEnd, words(flag, seg.entry), 0))
	}
	if l.stub == nil {
		t.Fatal("mos stub not recognised")
	}
	last := out.writes[len(out.writes)-1]
	if fr := responses(last); len(fr) != 1 || binary.LittleEndian.Uint32(fr[0]) != 451 {
		t.Fatalf("first stub frame %x, want the ESP8266 ROM divider 451", last)
	}
	out.writes = nil
	return l
}

func TestMosStub8266Recognised(t *testing.T) {
	out := &countingWriter{}
	l := upload8266(t, out)
	// ECHO: the echoed argument and the status leave in one write, as they
	// leave the stub's UART back to back.
	l.Feed(Encode([]byte{stubEcho}))
	l.Feed(Encode(words(0x12345678)))
	if len(out.writes) != 1 {
		t.Fatalf("ECHO answered in %d writes", len(out.writes))
	}
	if fr := responses(out.writes[0]); len(fr) != 2 || !bytes.Equal(fr[0], words(0x12345678)) || !bytes.Equal(fr[1], []byte{0}) {
		t.Fatalf("ECHO: %x", fr)
	}
}

func TestMosStub8266RebootLandsInROM(t *testing.T) {
	out := &countingWriter{}
	l := upload8266(t, out)
	if ex, done := l.Feed(Encode([]byte{stubReboot})); done {
		t.Fatalf("ESP8266 REBOOT left download mode (%v)", ex)
	}
	if l.stub != nil {
		t.Fatal("stub still running after REBOOT")
	}
	out.writes = nil
	l.Feed(syncRequest())
	fr := responses(bytes.Join(out.writes, nil))
	if len(fr) != 8 || len(fr[0]) != 8+2 || binary.LittleEndian.Uint32(fr[0][4:]) != syncValue {
		t.Fatalf("ROM SYNC after REBOOT: %x", fr)
	}
}

func TestRunningStubResetBySync(t *testing.T) {
	out := &countingWriter{}
	l := upload8266(t, out)
	l.Feed(syncRequest())
	if l.stub != nil {
		t.Fatal("SYNC did not reset the stub")
	}
	if fr := responses(bytes.Join(out.writes, nil)); len(fr) != 8 || binary.LittleEndian.Uint32(fr[0][4:]) != syncValue {
		t.Fatalf("SYNC: %x", fr)
	}
}

// An upload whose entry lies outside every uploaded region: the ROM jumps
// into nothing and the chip is silent until the host resets it.
func TestUnknownStubEntryHangs(t *testing.T) {
	out := &countingWriter{}
	l := New(&fakeChip{regs: map[uint32]uint32{}}, out)
	l.Feed(request(CmdMemBegin, words(16, 1, 0x1000, 0x40100000), 0))
	l.Feed(request(CmdMemData, append(words(16, 0, 0, 0), make([]byte, 16)...), checksum(make([]byte, 16))))
	l.Feed(request(CmdMemEnd, words(0, 0x40200000), 0))
	n := len(out.writes)
	l.Feed(request(CmdReadReg, words(magicReg), 0))
	l.Feed(Encode([]byte{stubEcho}))
	if len(out.writes) != n {
		t.Fatalf("a crashed chip answered: %x", out.writes[n:])
	}
	l.Feed(syncRequest())
	l.Feed(request(CmdReadReg, words(magicReg), 0))
	fr := responses(bytes.Join(out.writes[n:], nil))
	if len(fr) != 9 || binary.LittleEndian.Uint32(fr[8][4:]) != MagicESP8266 {
		t.Fatalf("after the reset SYNC: %x", fr)
	}
}

// FuzzMosStub8266 feeds arbitrary bytes to a running ESP8266 mos stub:
// malformed frames, truncated arguments, stray data during writes and
// reads must never crash it.
func FuzzMosStub8266(f *testing.F) {
	f.Add(append(Encode([]byte{stubFlashRead}), Encode(words(0, 4096, 1024))...))
	f.Add(append(Encode([]byte{stubFlashWrite}), Encode(words(0x1000, 0x1000, 1))...))
	f.Add(append(Encode([]byte{stubFlashDigest}), Encode(words(0, 0x2000, 0x1000))...))
	f.Add(append(Encode([]byte{stubReadReg}), Encode(words(0x3ff00050))...))
	f.Add(syncRequest())
	f.Fuzz(func(t *testing.T, b []byte) {
		l := upload8266(t, &countingWriter{})
		l.Feed(b)
		if l.inflater != nil {
			l.inflater.finish()
		}
	})
}
