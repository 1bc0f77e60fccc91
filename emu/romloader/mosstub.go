package romloader

import (
	"bytes"
	"compress/zlib"
	"crypto/md5"
	"encoding/binary"
	"hash"
	"io"

	"github.com/mosemu/mosemu/emu/flash"
)

// The mos flasher stub's commands (mos cli/flash/esp/stub).
const (
	stubFlashWrite  = 0x01
	stubFlashRead   = 0x02
	stubFlashDigest = 0x03
	stubReadChipID  = 0x04
	stubEraseChip   = 0x05
	stubBootFW      = 0x06
	stubReboot      = 0x07
	stubEcho        = 0x08
	stubReadReg     = 0x09
	stubWriteReg    = 0x0A

	stubBufSize    = 4096
	flagEmpty      = 1
	flagCompressed = 2

	// SPI flash id reported by READ_CHIP_ID: a 4 MiB Winbond W25Q32.
	flashMfg, flashType, flashCap = 0xEF, 0x40, 0x16
)

// mosStub is the state of an emulated mos flasher stub.
type mosStub struct {
	l       *Loader
	pending byte   // command waiting for its argument frame, 0 if none
	out     []byte // frames answering the current host frame

	// FLASH_WRITE in progress
	writing bool
	wAddr   uint32
	wLen    uint32
	wErase  bool
	wDone   uint32
	wDigest hash.Hash
	wErased map[int64]bool

	// FLASH_READ in progress
	reading  bool
	rAddr    uint32
	rLen     uint32
	rBlock   uint32
	rSent    uint32
	rDigest  hash.Hash
	rWaiting bool
}

// startMosStub is called when the mos stub was uploaded and started: like
// the stub, it announces the previous UART divider in one frame.
func (l *Loader) startMosStub() {
	l.stub = &mosStub{l: l}
	if len(l.memParams) == 8 { // the stub switches to the flasher baud rate first
		l.setBaud(binary.LittleEndian.Uint32(l.memParams[4:]))
	}
	l.out.Write(Encode(binary.LittleEndian.AppendUint32(nil, romUARTDivider(l.t.ESP32()))))
}

// send queues a frame; the stub's UART emits a command's frames back to
// back, so they leave in one write when the host frame has been handled.
func (s *mosStub) send(b []byte)    { s.out = append(s.out, Encode(b)...) }
func (s *mosStub) status(code byte) { s.send([]byte{code}) }

func (s *mosStub) flush() {
	if len(s.out) > 0 {
		s.l.out.Write(s.out)
		s.out = nil
	}
}

func needsArgs(cmd byte) bool {
	switch cmd {
	case stubFlashWrite, stubFlashRead, stubFlashDigest, stubEcho, stubReadReg, stubWriteReg:
		return true
	}
	return false
}

// frame handles one SLIP frame from the host; done reports the end of the
// download session.
func (s *mosStub) frame(f []byte) (Exit, bool) {
	defer s.flush()
	if isROMSync(f) {
		// A host starting over (it pulsed RTS/DTR, which a pty cannot
		// carry): the chip is reset into the ROM loader, which answers.
		s.l.resetToROM()
		return s.l.handle(f)
	}
	switch {
	case s.writing:
		s.writeData(f)
		return 0, false
	case s.reading:
		if len(f) == 4 { // ack of a data block
			s.rWaiting = false
			s.readNext()
		}
		return 0, false
	case s.pending != 0:
		cmd := s.pending
		s.pending = 0
		return s.run(cmd, f)
	case len(f) == 1:
		if needsArgs(f[0]) {
			s.pending = f[0]
			return 0, false
		}
		return s.run(f[0], nil)
	}
	return 0, false // stray frame: ignored
}

func arg(a []byte, i int) uint32 {
	if len(a) < 4*(i+1) {
		return 0
	}
	return binary.LittleEndian.Uint32(a[4*i:])
}

func (s *mosStub) run(cmd byte, a []byte) (Exit, bool) {
	fl := s.l.t.Flash()
	switch cmd {
	case stubEcho:
		s.send(a)
		s.status(0)
	case stubReadChipID:
		s.send([]byte{flashMfg, flashType, flashCap, 0})
		s.status(0)
	case stubReadReg:
		if len(a) != 4 {
			s.status(0x91)
			break
		}
		s.send(binary.LittleEndian.AppendUint32(nil, s.l.readReg(arg(a, 0))))
		s.status(0)
	case stubWriteReg:
		if len(a) != 8 {
			s.status(0xA1)
			break
		}
		s.l.writeReg(arg(a, 0), arg(a, 1))
		s.status(0)
	case stubFlashDigest:
		addr, n, bs := arg(a, 0), arg(a, 1), arg(a, 2)
		if len(a) != 12 || int64(addr)+int64(n) > fl.Size() {
			s.status(0x61)
			break
		}
		data := make([]byte, n)
		fl.ReadAt(data, int64(addr))
		if bs > 0 {
			for off := uint32(0); off < n; off += bs {
				sum := md5.Sum(data[off:min(off+bs, n)])
				s.send(sum[:])
			}
		}
		sum := md5.Sum(data)
		s.send(sum[:])
		s.status(0)
	case stubFlashRead:
		addr, n, bs := arg(a, 0), arg(a, 1), arg(a, 2)
		if len(a) != 12 || bs == 0 || bs > stubBufSize || int64(addr)+int64(n) > fl.Size() {
			s.status(0x51)
			break
		}
		s.reading, s.rAddr, s.rLen, s.rBlock, s.rSent, s.rDigest = true, addr, n, bs, 0, md5.New()
		s.readNext()
	case stubFlashWrite:
		addr, n, erase := arg(a, 0), arg(a, 1), arg(a, 2)
		switch {
		case len(a) != 12:
			s.status(0x41)
		case addr%flash.SectorSize != 0:
			s.status(0x32)
		case n%flash.SectorSize != 0 || int64(addr)+int64(n) > fl.Size():
			s.status(0x33)
		default:
			s.writing, s.wAddr, s.wLen, s.wErase, s.wDone = true, addr, n, erase != 0, 0
			s.wDigest, s.wErased = md5.New(), map[int64]bool{}
			s.progress()
			if n == 0 {
				s.finishWrite()
			}
		}
	case stubEraseChip:
		fl.Erase(0, fl.Size())
		s.status(0)
	case stubBootFW:
		s.status(0)
		return ExitRunUserCode, true
	case stubReboot:
		s.status(0)
		if !s.l.t.ESP32() {
			// GPIO0 is still strapped low: a software reset of an
			// ESP8266 lands in the ROM loader again (mos stub_flasher.c).
			s.flush()
			s.l.resetToROM()
			return 0, false
		}
		return ExitReboot, true
	default:
		s.status(0xFF)
	}
	return 0, false
}

// readNext sends the next FLASH_READ block, or the digest and status when
// everything was acknowledged.
func (s *mosStub) readNext() {
	if s.rWaiting {
		return
	}
	if s.rSent >= s.rLen {
		s.reading = false
		s.send(s.rDigest.Sum(nil))
		s.status(0)
		return
	}
	n := min(s.rBlock, s.rLen-s.rSent)
	b := make([]byte, n)
	s.l.t.Flash().ReadAt(b, int64(s.rAddr+s.rSent))
	s.rDigest.Write(b)
	s.rSent += n
	s.rWaiting = true
	s.send(b)
}

// progress reports bytes written, buffer level and the MD5 so far.
func (s *mosStub) progress() {
	p := binary.LittleEndian.AppendUint32(nil, s.wDone)
	p = binary.LittleEndian.AppendUint32(p, 0)
	if s.wDone == 0 {
		p = append(p, make([]byte, 16)...)
	} else {
		p = append(p, s.wDigest.Sum(nil)...)
	}
	s.send(p)
}

func (s *mosStub) writeData(f []byte) {
	if len(f) == 0 {
		return
	}
	var data []byte
	switch {
	case f[0]&flagEmpty != 0:
		data = bytes.Repeat([]byte{0xFF}, stubBufSize)
	case f[0]&flagCompressed != 0:
		zr, err := zlib.NewReader(bytes.NewReader(f[1:]))
		if err == nil {
			data, err = io.ReadAll(io.LimitReader(zr, stubBufSize+1))
		}
		if err != nil || len(data) > stubBufSize {
			s.writing = false
			s.status(0x39)
			return
		}
	default:
		data = f[1:]
	}
	if uint32(len(data)) > s.wLen-s.wDone {
		s.writing = false
		s.status(0x41)
		return
	}
	fl := s.l.t.Flash()
	off := int64(s.wAddr + s.wDone)
	if s.wErase {
		for sec := off &^ (flash.SectorSize - 1); sec < off+int64(len(data)); sec += flash.SectorSize {
			if !s.wErased[sec] {
				fl.Erase(sec, flash.SectorSize)
				s.wErased[sec] = true
			}
		}
	}
	if _, err := fl.WriteAt(data, off); err != nil {
		s.writing = false
		s.status(0x40)
		return
	}
	s.wDigest.Write(data)
	s.wDone += uint32(len(data))
	s.progress()
	if s.wDone == s.wLen {
		s.finishWrite()
	}
}

// finishWrite sends the 36-byte result (cycle counts, MD5) and the status.
func (s *mosStub) finishWrite() {
	s.writing = false
	r := make([]byte, 20)
	binary.LittleEndian.PutUint32(r[16:], 1) // total time: non-zero, the host divides by it
	s.send(append(r, s.wDigest.Sum(nil)...))
	s.status(0)
}
