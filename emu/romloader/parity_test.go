package romloader

import (
	"bytes"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
)

// TestReadFlashSlow is `esptool --no-stub read_flash`: READ_FLASH_SLOW
// reads up to 64 bytes per command and always answers with 64 bytes plus
// the ROM's 4 status bytes.
func TestReadFlashSlow(t *testing.T) {
	l, out, c := newLoader(true)
	data := bytes.Repeat([]byte("0123456789abcdef"), 8)
	c.fl.WriteAt(data, 0x2000)
	l.Feed(request(CmdReadFlashSlow, words(0x2010, 10), 0))
	l.Feed(request(CmdReadFlashSlow, words(0x2000, 65), 0)) // more than the ROM reads
	fr := responses(out.Bytes())
	if len(fr) != 2 || len(fr[0]) != 8+64+4 || !bytes.Equal(fr[0][8:72], data[16:80]) || !bytes.Equal(fr[0][72:], []byte{0, 0, 0, 0}) {
		t.Fatalf("READ_FLASH_SLOW reply %x", fr)
	}
	if !bytes.Equal(fr[1][8:], []byte{1, errInvalidParam, 0, 0}) {
		t.Fatalf("65-byte read answered %x", fr[1])
	}
}

// esptoolEraseSize is esptool's ESP8266ROM.get_erase_size(): the size it
// sends so that the ROM's buggy erase covers exactly the data.
func esptoolEraseSize(offset, size uint32) uint32 {
	const sectorsPerBlock, sectorSize = 16, 4096
	numSectors := (size + sectorSize - 1) / sectorSize
	startSector := offset / sectorSize
	head := sectorsPerBlock - startSector%sectorsPerBlock
	if numSectors < head {
		head = numSectors
	}
	if numSectors < 2*head {
		return (numSectors + 1) / 2 * sectorSize
	}
	return (numSectors - head) * sectorSize
}

// TestESP8266ROMEraseQuirk: the ESP8266 ROM erases more than FLASH_BEGIN
// asks; with esptool's compensated size a `--no-stub write_flash` over
// existing data erases exactly the image's sectors (even sector counts;
// an odd count below the head erases one more, as on the chip), and a
// client that does not compensate loses the data after its image.
func TestESP8266ROMEraseQuirk(t *testing.T) {
	for _, tc := range []struct{ off, size uint32 }{
		{0x0, 0x4000}, {0x3000, 0x8000}, {0xE000, 0x12000}, {0x10000, 0x40000}, {0x7000, 0x1000},
	} {
		l, _, c := newLoader(false)
		filler := bytes.Repeat([]byte{0xA5}, 0x100000)
		c.fl.WriteAt(filler, 0)
		n := (tc.size + 0xFFF) / 0x1000
		l.Feed(request(CmdFlashBegin, words(esptoolEraseSize(tc.off, tc.size), n*4, 0x400, tc.off), 0))
		erased := countErased(c.fl, 0, 0x100000)
		wantMin, wantMax := int(n), int(n)
		if head := 16 - (tc.off/0x1000)%16; n < 2*min(head, n) && n%2 == 1 {
			wantMax++
		}
		if erased < wantMin || erased > wantMax || !isErased(c.fl, int64(tc.off), int64(n)*0x1000) {
			t.Errorf("offset %#x size %#x: %d sectors erased, want %d..%d starting at the offset", tc.off, tc.size, erased, wantMin, wantMax)
		}
		// Without compensation the ROM erases past the image.
		l2, _, c2 := newLoader(false)
		c2.fl.WriteAt(filler, 0)
		l2.Feed(request(CmdFlashBegin, words(tc.size, n*4, 0x400, tc.off), 0))
		if got := countErased(c2.fl, 0, 0x100000); got <= int(n) {
			t.Errorf("offset %#x size %#x: uncompensated erase took %d sectors, the ROM erases more", tc.off, tc.size, got)
		}
	}
	// The ESP32 ROM erases what it is asked.
	l, _, c := newLoader(true)
	c.fl.WriteAt(bytes.Repeat([]byte{0xA5}, 0x20000), 0)
	l.Feed(request(CmdFlashBegin, words(0x3000, 12, 0x400, 0x3000), 0))
	if got := countErased(c.fl, 0, 0x20000); got != 3 {
		t.Fatalf("ESP32 ROM erased %d sectors for 3", got)
	}
}

func countErased(fl *flash.Chip, off, n int64) int {
	k := 0
	for s := off; s < off+n; s += flash.SectorSize {
		if isErased(fl, s, flash.SectorSize) {
			k++
		}
	}
	return k
}

func isErased(fl *flash.Chip, off, n int64) bool {
	b := make([]byte, n)
	fl.ReadAt(b, off)
	return bytes.Count(b, []byte{0xFF}) == len(b)
}

// encChip is a fake chip whose download-mode encryption engine XORs with
// 0x5A, enough to tell encrypted from plain writes.
type encChip struct{ fakeChip }

type xorDev struct{ flash.Device }

func (x xorDev) WriteAt(p []byte, off int64) (int, error) {
	b := make([]byte, len(p))
	for i := range p {
		b[i] = p[i] ^ 0x5A
	}
	return x.Device.WriteAt(b, off)
}

func (c *encChip) EncryptedFlash() flash.Device { return xorDev{c.fl} }

// TestEsptoolStubParity: FLASH_ENCRYPT_DATA writes through the engine;
// errors come in the stub's format (2 status bytes, stub codes);
// FLASH_BEGIN(0,0)+FLASH_END(0), esptool's --after no_reset, reloads the
// ROM loader instead of booting; ROM memory reads are stable.
func TestEsptoolStubParity(t *testing.T) {
	var out bytes.Buffer
	c := &encChip{fakeChip{esp32: true, fl: flash.NewMemory(4 << 20), regs: map[uint32]uint32{}}}
	l := New(c, &out)
	rom1 := l.readReg(0x40000400)
	code := make([]byte, 0x1800) // the entry lies in the uploaded text
	l.Feed(request(CmdMemBegin, words(uint32(len(code)), 1, 0x1800, 0x400a8000), 0))
	l.Feed(request(CmdMemData, append(words(uint32(len(code)), 0, 0, 0), code...), checksum(code)))
	l.Feed(request(CmdMemEnd, words(0, 0x400a902c), 0))
	out.Reset()

	data := bytes.Repeat([]byte{0x11}, 64)
	l.Feed(request(CmdFlashBegin, words(64, 1, 0x4000, 0x5000, 0), 0))
	l.Feed(request(CmdFlashEncData, append(words(64, 0, 0, 0), data...), checksum(data)))
	l.Feed(request(CmdFlashData, append(words(64, 1, 0, 0), data...), 0x00))  // bad checksum
	l.Feed(request(CmdFlashData, append(words(64, 1, 0, 0), data[:8]...), 0)) // length mismatch
	l.Feed(request(0x7E, nil, 0))                                             // unknown
	fr := responses(out.Bytes())
	if len(fr) != 5 {
		t.Fatalf("%d replies", len(fr))
	}
	for i, want := range [][]byte{{0, 0}, {0, 0}, {1, stubErrBadChecksum}, {1, stubErrBadDataLen}, {1, stubErrNotImplemented}} {
		if f := fr[i]; len(f) != 10 || !bytes.Equal(f[8:], want) {
			t.Errorf("reply %d: %x, want status %x", i, f, want)
		}
	}
	got := make([]byte, 64)
	c.fl.ReadAt(got, 0x5000)
	if !bytes.Equal(got, bytes.Repeat([]byte{0x11 ^ 0x5A}, 64)) {
		t.Fatalf("FLASH_ENCRYPT_DATA wrote %x", got[:8])
	}
	l.Feed(request(CmdFlashBegin, words(0, 0, 0x4000, 0), 0))
	if ex, done := l.Feed(request(CmdFlashEnd, words(0), 0)); !done || ex != ExitResetToROM {
		t.Fatalf("stub FLASH_END(reboot): %v %v", ex, done)
	}
	if rom2 := New(c, &out).readReg(0x40000400); rom1 != rom2 || rom1 == 0 {
		t.Fatalf("ROM word read %#x then %#x", rom1, rom2)
	}
	if v := l.readReg(0x40001000); v != MagicESP32 {
		t.Fatalf("chip magic %#x", v)
	}
}

type baudChip struct {
	fakeChip
	bauds []int
}

func (c *baudChip) SetBaud(b int) { c.bauds = append(c.bauds, b) }

// TestBaudChanges: CHANGE_BAUDRATE and the mos stub's parameter block
// reach a target that models the baud rate, after the reply.
func TestBaudChanges(t *testing.T) {
	var out bytes.Buffer
	c := &baudChip{fakeChip: fakeChip{esp32: true, fl: flash.NewMemory(4 << 20), regs: map[uint32]uint32{}}}
	l := New(c, &out)
	l.Feed(request(CmdChangeBaud, words(460800, 0), 0))
	if fr := responses(out.Bytes()); len(fr) != 1 || fr[0][8] != 0 || len(c.bauds) != 1 || c.bauds[0] != 460800 {
		t.Fatalf("CHANGE_BAUDRATE: %x, bauds %v", fr, c.bauds)
	}
	params := words(115200, 921600)
	l.Feed(request(CmdMemBegin, words(8, 1, 0x1000, 0x40090000), 0))
	l.Feed(request(CmdMemData, append(words(8, 0, 0, 0), params...), checksum(params)))
	l.Feed(request(CmdMemEnd, words(1, 0), 0))
	code := make([]byte, 4308) // mos's ESP32 stub size: the entry lies in it
	l.Feed(request(CmdMemBegin, words(uint32(len(code)), 2, 0x1000, 0x40090008), 0))
	l.Feed(request(CmdMemData, append(words(0x1000, 0, 0, 0), code[:0x1000]...), checksum(code[:0x1000])))
	l.Feed(request(CmdMemData, append(words(uint32(len(code)-0x1000), 1, 0, 0), code[0x1000:]...), checksum(code[0x1000:])))
	l.Feed(request(CmdMemEnd, words(0, 0x40091040), 0))
	if !l.StubRunning() || len(c.bauds) != 2 || c.bauds[1] != 921600 {
		t.Fatalf("mos stub start: running %v, bauds %v", l.StubRunning(), c.bauds)
	}
}
