package romloader

import (
	"bytes"
	"compress/zlib"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"

	"github.com/mosemu/mosemu/emu/flash"
)

// Command opcodes of the ROM loader.
const (
	CmdFlashBegin    = 0x02
	CmdFlashData     = 0x03
	CmdFlashEnd      = 0x04
	CmdMemBegin      = 0x05
	CmdMemEnd        = 0x06
	CmdMemData       = 0x07
	CmdSync          = 0x08
	CmdWriteReg      = 0x09
	CmdReadReg       = 0x0A
	CmdSPISetParams  = 0x0B
	CmdSPIAttach     = 0x0D
	CmdReadFlashSlow = 0x0E
	CmdChangeBaud    = 0x0F
	CmdFlashDeflBeg  = 0x10
	CmdFlashDeflData = 0x11
	CmdFlashDeflEnd  = 0x12
	CmdSPIFlashMD5   = 0x13
)

// Error codes of the esptool flasher stub (stub_flasher.h).
const (
	stubErrBadDataLen     = 0xC0
	stubErrBadChecksum    = 0xC1
	stubErrSPIOp          = 0xC4
	stubErrNotInFlashMode = 0xC6
	stubErrInflate        = 0xC7
	stubErrTooMuchData    = 0xC9
	stubErrNotImplemented = 0xFF
)

// ROM error codes.
const (
	errInvalidParam = 0x01
	errInvalidMsg   = 0x05
	errChecksum     = 0x07
	errFlashWrite   = 0x08
	errDeflate      = 0x0B
)

// Chip-detect magic values at 0x40001000.
const (
	magicReg     = 0x40001000
	MagicESP32   = 0x00F01D83
	MagicESP8266 = 0xFFF0C101
	syncValue    = 0x20120707
)

// Target is the chip the loader runs on.
type Target interface {
	// ESP32 is true for an ESP32 (4 status bytes), false for an ESP8266.
	ESP32() bool
	// Flash is the raw SPI flash (no encryption: the ROM writes raw).
	Flash() flash.Device
	// EncryptedFlash is the flash seen through the encryption engine with
	// the device key, for the esptool stub's encrypted writes; nil when the
	// chip has none or DISABLE_DL_ENCRYPT is burned.
	EncryptedFlash() flash.Device
	// ReadReg and WriteReg reach peripherals the loader does not model
	// itself (the efuse controller); ok is false for unknown addresses.
	ReadReg(addr uint32) (uint32, bool)
	WriteReg(addr, v uint32) bool
}

// BaudSetter is implemented by targets whose UART models the baud rate:
// the loader calls SetBaud when the host changes it (CHANGE_BAUDRATE, the
// mos stub's start-up parameters).
type BaudSetter interface {
	SetBaud(baud int)
}

func (l *Loader) setBaud(baud uint32) {
	if s, ok := l.t.(BaudSetter); ok && baud > 0 {
		s.SetBaud(int(baud))
	}
}

// Exit says why the loader handed the UART back.
type Exit int

// Exit reasons.
const (
	ExitRunUserCode Exit = iota // FLASH_END/MEM_END asked to run the firmware
	ExitReboot                  // FLASH_END asked for a reboot
	ExitResetToROM              // a stub reset the chip, which stays in download mode
)

// Loader is one download-mode session.
type Loader struct {
	t    Target
	out  io.Writer
	dec  Decoder
	regs map[uint32]uint32 // registers written that nothing else models

	// flash write state
	writing   bool
	deflate   bool
	flashAddr uint32
	flashSize uint32
	blockSize uint32
	nextSeq   uint32
	written   uint32
	inflater  *inflater

	mem       map[uint32]int // MEM_BEGIN address -> size, to recognise stubs
	memAddr   uint32         // address of the current MEM_BEGIN
	memParams []byte         // the last 8-byte MEM block (mos stub: ROM and flasher baud)
	stub      *mosStub       // the emulated mos flasher stub once it runs
	hung      bool           // MEM_END jumped to memory holding no code

	esptoolStub bool         // the esptool flasher stub runs ("OHAI" sent)
	dst         flash.Device // destination of the current flash write
	rd          *streamRead  // esptool stub READ_FLASH in progress
}

// streamRead is an esptool-stub READ_FLASH: packets flow while fewer than
// maxInFlight bytes are unacknowledged.
type streamRead struct {
	addr, n, packet, maxInFlight, sent, acked uint32
}

// inflater decompresses a FLASH_DEFL_* stream as its blocks arrive and
// programs the output at consecutive flash offsets.
type inflater struct {
	pw   *io.PipeWriter
	done chan struct{}
	err  error
}

func (l *Loader) startInflater(off int64) *inflater {
	pr, pw := io.Pipe()
	in := &inflater{pw: pw, done: make(chan struct{})}
	dst := l.dst
	go func() {
		defer close(in.done)
		var pending []byte
		flush := func(all bool) error {
			n := len(pending)
			if !all {
				n &^= 31 // encrypted writes need whole 32-byte blocks
			}
			if n == 0 {
				return nil
			}
			if _, err := dst.WriteAt(pending[:n], off); err != nil {
				return err
			}
			off += int64(n)
			pending = append(pending[:0], pending[n:]...)
			return nil
		}
		zr, err := zlib.NewReader(pr)
		if err == nil {
			buf := make([]byte, 4096)
			for {
				n, rerr := zr.Read(buf)
				pending = append(pending, buf[:n]...)
				if len(pending) >= 4096 {
					if err = flush(false); err != nil {
						break
					}
				}
				if rerr != nil {
					if rerr != io.EOF {
						err = rerr
					} else {
						err = flush(true)
					}
					break
				}
			}
		}
		in.err = err
		pr.CloseWithError(err)
		io.Copy(io.Discard, pr)
	}()
	return in
}

func (in *inflater) finish() error {
	in.pw.Close()
	<-in.done
	return in.err
}

// New returns a loader speaking on out.
func New(t Target, out io.Writer) *Loader {
	return &Loader{t: t, out: out, regs: map[uint32]uint32{}}
}

// Feed consumes bytes from the host. It returns done=true with the exit
// reason when the session ends.
func (l *Loader) Feed(p []byte) (Exit, bool) {
	for _, f := range l.dec.Feed(p) {
		var ex Exit
		var done bool
		if l.hung { // crashed: only a reset (the host's SYNC) revives it
			if !isROMSync(f) {
				continue
			}
			l.resetToROM()
		}
		if l.rd != nil {
			l.readAck(f)
			continue
		}
		if l.stub != nil {
			ex, done = l.stub.frame(f)
		} else {
			ex, done = l.handle(f)
		}
		if done {
			return ex, true
		}
	}
	return 0, false
}

// StubRunning reports whether a flasher stub (mos's or esptool's) has been
// uploaded and started: the ROM no longer answers, the stub does.
func (l *Loader) StubRunning() bool { return l.stub != nil || l.esptoolStub }

func (l *Loader) reply(cmd byte, value uint32, data []byte, status, errCode byte) {
	body := append(append([]byte(nil), data...), status, errCode)
	if l.t.ESP32() && !l.esptoolStub {
		body = append(body, 0, 0)
	}
	hdr := make([]byte, 8, 8+len(body))
	hdr[0], hdr[1] = 0x01, cmd
	binary.LittleEndian.PutUint16(hdr[2:], uint16(len(body)))
	binary.LittleEndian.PutUint32(hdr[4:], value)
	l.out.Write(Encode(append(hdr, body...)))
}

func (l *Loader) ok(cmd byte, value uint32, data []byte) { l.reply(cmd, value, data, 0, 0) }
func (l *Loader) fail(cmd byte, code byte)               { l.reply(cmd, 0, nil, 1, code) }

// failAs fails with the ROM's error code, or the stub's when a stub runs.
func (l *Loader) failAs(cmd, rom, stub byte) {
	if l.esptoolStub {
		rom = stub
	}
	l.fail(cmd, rom)
}

func le(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[4*i:]) }

func (l *Loader) handle(f []byte) (Exit, bool) {
	if len(f) < 8 || f[0] != 0x00 {
		return 0, false // not a request: the ROM ignores it
	}
	cmd := f[1]
	size := int(binary.LittleEndian.Uint16(f[2:]))
	sum := binary.LittleEndian.Uint32(f[4:])
	data := f[8:]
	if size != len(data) {
		l.failAs(cmd, errInvalidMsg, stubErrBadDataLen)
		return 0, false
	}
	words := func(n int) bool {
		if len(data) < 4*n {
			l.failAs(cmd, errInvalidMsg, stubErrBadDataLen)
			return false
		}
		return true
	}
	switch cmd {
	case CmdSync:
		if len(data) != 36 || !bytes.Equal(data[:4], []byte{0x07, 0x07, 0x12, 0x20}) {
			l.failAs(cmd, errInvalidMsg, stubErrBadDataLen)
			return 0, false
		}
		v := uint32(syncValue)
		if l.esptoolStub {
			v = 0 // tells esptool a stub is already running
		}
		for i := 0; i < 8; i++ {
			l.ok(cmd, v, nil)
		}
	case CmdReadReg:
		if words(1) {
			l.ok(cmd, l.readReg(le(data, 0)), nil)
		}
	case CmdWriteReg:
		if words(4) {
			addr, v, mask := le(data, 0), le(data, 1), le(data, 2)
			if mask != 0xFFFFFFFF {
				v = v&mask | l.readReg(addr)&^mask
			}
			l.writeReg(addr, v)
			l.ok(cmd, 0, nil)
		}
	case CmdSPIAttach, CmdSPISetParams:
		l.ok(cmd, 0, nil)
	case CmdChangeBaud: // the reply goes out at the old rate, then the UART switches
		if words(1) {
			l.ok(cmd, 0, nil)
			l.setBaud(le(data, 0))
		}
	case CmdFlashBegin, CmdFlashDeflBeg:
		if !words(4) {
			return 0, false
		}
		eraseSize, blocks, blockSize, off := le(data, 0), le(data, 1), le(data, 2), le(data, 3)
		l.writing, l.deflate = true, cmd == CmdFlashDeflBeg
		l.flashAddr, l.blockSize, l.nextSeq, l.written = off, blockSize, 0, 0
		l.flashSize = blocks * blockSize
		if l.inflater != nil {
			l.inflater.finish()
			l.inflater = nil
		}
		if cmd == CmdFlashDeflBeg {
			l.flashSize = eraseSize // uncompressed size
		}
		start, end := int64(off)&^(flash.SectorSize-1), (int64(off)+int64(eraseSize)+flash.SectorSize-1)&^(flash.SectorSize-1)
		l.dst = l.t.Flash()
		if l.esptoolStub && len(data) >= 20 && le(data, 4) == 1 {
			if l.dst = l.t.EncryptedFlash(); l.dst == nil {
				l.writing = false
				l.fail(cmd, errInvalidParam)
				return 0, false
			}
		}
		if !l.t.ESP32() && !l.esptoolStub && end <= l.t.Flash().Size() {
			end = min(start+esp8266ROMEraseLen(off, eraseSize), l.t.Flash().Size())
		}
		if end > l.t.Flash().Size() || eraseSize == 0 && blocks == 0 {
			if eraseSize == 0 && blocks == 0 { // esptool's run(): FLASH_BEGIN(0,0)
				l.ok(cmd, 0, nil)
				return 0, false
			}
			l.fail(cmd, errInvalidParam)
			return 0, false
		}
		if err := l.t.Flash().Erase(start, end-start); err != nil {
			l.failAs(cmd, errFlashWrite, stubErrSPIOp)
			return 0, false
		}
		if l.deflate {
			l.inflater = l.startInflater(int64(off))
		}
		l.ok(cmd, 0, nil)
	case CmdFlashData, CmdFlashDeflData, CmdFlashEncData:
		if cmd == CmdFlashEncData && !l.esptoolStub {
			l.fail(cmd, errInvalidMsg)
			return 0, false
		}
		if !words(4) {
			return 0, false
		}
		if !l.writing {
			l.failAs(cmd, errInvalidParam, stubErrNotInFlashMode)
			return 0, false
		}
		n, seq := le(data, 0), le(data, 1)
		payload := data[16:]
		if int(n) != len(payload) {
			l.failAs(cmd, errInvalidParam, stubErrBadDataLen)
			return 0, false
		}
		if seq != l.nextSeq && !l.esptoolStub { // the stub does not check the sequence
			l.fail(cmd, errInvalidParam)
			return 0, false
		}
		if checksum(payload) != sum&0xFF {
			l.failAs(cmd, errChecksum, stubErrBadChecksum)
			return 0, false
		}
		if uint64(l.written)+uint64(len(payload)) > uint64(l.flashSize) && l.esptoolStub && cmd != CmdFlashDeflData {
			l.fail(cmd, stubErrTooMuchData)
			return 0, false
		}
		l.nextSeq++
		if cmd == CmdFlashDeflData {
			if l.inflater == nil {
				l.fail(cmd, errInvalidParam)
				return 0, false
			}
			if _, err := l.inflater.pw.Write(payload); err != nil {
				l.failAs(cmd, errDeflate, stubErrInflate)
				return 0, false
			}
			l.ok(cmd, 0, nil)
			return 0, false
		}
		dst := l.dst
		if cmd == CmdFlashEncData { // FLASH_ENCRYPT_DATA: through the encryption engine
			if dst = l.t.EncryptedFlash(); dst == nil {
				l.fail(cmd, stubErrSPIOp)
				return 0, false
			}
		}
		if _, err := dst.WriteAt(payload, int64(l.flashAddr)+int64(l.written)); err != nil {
			l.failAs(cmd, errFlashWrite, stubErrSPIOp)
			return 0, false
		}
		l.written += uint32(len(payload))
		l.ok(cmd, 0, nil)
	case CmdFlashEnd, CmdFlashDeflEnd:
		l.writing = false
		if l.inflater != nil {
			err := l.inflater.finish()
			l.inflater = nil
			if err != nil {
				l.failAs(cmd, errDeflate, stubErrInflate)
				return 0, false
			}
		}
		l.ok(cmd, 0, nil)
		if len(data) >= 4 {
			switch {
			case le(data, 0) == 0 && l.esptoolStub:
				// esptool --after no_reset: the stub's reset reloads the ROM loader.
				return ExitResetToROM, true
			case le(data, 0) == 0:
				return ExitReboot, true
			case !l.esptoolStub: // the ROM jumps to the app; a stub stays
				return ExitRunUserCode, true
			}
		}
	case CmdReadFlashSlow:
		// ROM only (esptool --no-stub read_flash): at most 64 bytes per
		// command, always answered with a 64-byte block.
		if l.esptoolStub {
			l.fail(cmd, stubErrNotImplemented)
			return 0, false
		}
		if !words(2) {
			return 0, false
		}
		addr, n := le(data, 0), le(data, 1)
		if n > 64 || int64(addr)+64 > l.t.Flash().Size() {
			l.fail(cmd, errInvalidParam)
			return 0, false
		}
		b := make([]byte, 64)
		l.t.Flash().ReadAt(b, int64(addr))
		l.ok(cmd, 0, b)
	case CmdSPIFlashMD5:
		if !words(2) {
			return 0, false
		}
		if l.inflater != nil { // flush what has been received so far
			l.inflater.finish()
			l.inflater = nil
		}
		addr, n := le(data, 0), le(data, 1)
		if int64(addr)+int64(n) > l.t.Flash().Size() {
			l.fail(cmd, errInvalidParam)
			return 0, false
		}
		b := make([]byte, n)
		l.t.Flash().ReadAt(b, int64(addr))
		s := md5.Sum(b)
		if l.esptoolStub {
			l.ok(cmd, 0, s[:]) // stub: 16 raw bytes
		} else {
			l.ok(cmd, 0, []byte(hex.EncodeToString(s[:]))) // ROM: 32 ASCII hex digits
		}
	case CmdMemBegin:
		if !words(4) {
			return 0, false
		}
		if l.mem == nil {
			l.mem = map[uint32]int{}
		}
		l.mem[le(data, 3)] = int(le(data, 0))
		l.memAddr = le(data, 3)
		l.ok(cmd, 0, nil)
	case CmdMemData:
		if len(data) == 16+8 && l.mem[l.memAddr] == 8 {
			l.memParams = append([]byte(nil), data[16:]...)
		}
		l.ok(cmd, 0, nil)
	case CmdMemEnd:
		l.ok(cmd, 0, nil)
		if words(2) && le(data, 0) == 0 {
			l.startStub(le(data, 1)) // mosstub8266.go
		}
	case CmdEraseFlash, CmdEraseRegion, CmdReadFlash, CmdRunUserCode:
		if !l.esptoolStub {
			l.fail(cmd, errInvalidMsg)
			return 0, false
		}
		return l.stubCommand(cmd, data)
	default:
		if l.esptoolStub {
			l.fail(cmd, stubErrNotImplemented)
		} else {
			l.fail(cmd, errInvalidMsg)
		}
	}
	return 0, false
}

// Commands only the esptool stub has.
const (
	CmdEraseFlash   = 0xD0
	CmdEraseRegion  = 0xD1
	CmdReadFlash    = 0xD2
	CmdRunUserCode  = 0xD3
	CmdFlashEncData = 0xD4 // FLASH_ENCRYPT_DATA of the legacy esptool stub
)

func (l *Loader) stubCommand(cmd byte, data []byte) (Exit, bool) {
	fl := l.t.Flash()
	switch cmd {
	case CmdEraseFlash:
		fl.Erase(0, fl.Size())
		l.ok(cmd, 0, nil)
	case CmdEraseRegion:
		if len(data) < 8 || le(data, 0)%flash.SectorSize != 0 || le(data, 1)%flash.SectorSize != 0 {
			l.fail(cmd, 0x32)
			break
		}
		if err := fl.Erase(int64(le(data, 0)), int64(le(data, 1))); err != nil {
			l.fail(cmd, 0x33)
			break
		}
		l.ok(cmd, 0, nil)
	case CmdReadFlash:
		if len(data) < 16 || le(data, 2) == 0 || int64(le(data, 0))+int64(le(data, 1)) > fl.Size() {
			l.fail(cmd, errInvalidParam)
			break
		}
		l.ok(cmd, 0, nil)
		l.rd = &streamRead{addr: le(data, 0), n: le(data, 1), packet: le(data, 2), maxInFlight: max(le(data, 3), le(data, 2))}
		l.readPump()
	case CmdRunUserCode:
		return ExitRunUserCode, true
	}
	return 0, false
}

// readPump sends READ_FLASH packets while the window allows, then the MD5.
func (l *Loader) readPump() {
	r := l.rd
	for r.sent < r.n && r.sent-r.acked < r.maxInFlight {
		n := min(r.packet, r.n-r.sent)
		b := make([]byte, n)
		l.t.Flash().ReadAt(b, int64(r.addr+r.sent))
		r.sent += n
		l.out.Write(Encode(b))
	}
	if r.acked >= r.n {
		b := make([]byte, r.n)
		l.t.Flash().ReadAt(b, int64(r.addr))
		s := md5.Sum(b)
		l.out.Write(Encode(s[:]))
		l.rd = nil
	}
}

// readAck handles the host's acknowledgement of READ_FLASH data.
func (l *Loader) readAck(f []byte) {
	if len(f) != 4 {
		return
	}
	l.rd.acked = binary.LittleEndian.Uint32(f)
	l.readPump()
}

// esp8266ROMEraseLen is how much the ESP8266 ROM's FLASH_BEGIN erases for
// size bytes at off: its SPIEraseArea counts the sectors up to the next
// 64 KiB block twice, erasing n + min(head, n) sectors for n requested
// (n = whole sectors of size, head = sectors left in the first block).
// esptool's get_erase_size() sends the size that makes this come out
// exact; a client that does not compensate loses the sectors after its
// data, as on the real chip.
func esp8266ROMEraseLen(off, size uint32) int64 {
	const sectorsPerBlock = 16
	n := (int64(size) + flash.SectorSize - 1) / flash.SectorSize
	head := sectorsPerBlock - int64(off/flash.SectorSize)%sectorsPerBlock
	return (n + min(head, n)) * flash.SectorSize
}

func checksum(p []byte) uint32 {
	c := byte(0xEF)
	for _, b := range p {
		c ^= b
	}
	return uint32(c)
}

// readReg answers the registers tools read at connect time.
func (l *Loader) readReg(addr uint32) uint32 {
	if v, ok := l.t.ReadReg(addr); ok {
		return v
	}
	switch addr {
	case magicReg:
		if l.t.ESP32() {
			return MagicESP32
		}
		return MagicESP8266
	case 0x3FF40014: // UART0 CLKDIV: 40 MHz APB / 115200
		return 40_000_000 / 115200
	case 0x60000014: // ESP8266 UART0 CLKDIV: 80 MHz / 115200 (26 MHz crystal × 2 divider)
		return 52_000_000 / 115200
	case 0x3FF6607C: // APB_CTL_DATE: bit 31 clear (not revision 3)
		return 0x16042000
	case 0x3FF5F06C: // RTCCALICFG1: 8 MHz clock calibration, ROM clock ≈ 40 MHz with CK8M 0x60
		if l.t.ESP32() {
			return 1067 << 7
		}
	}
	if v, ok := l.regs[addr]; ok {
		return v
	}
	if romWord, ok := l.romContent(addr); ok {
		return romWord
	}
	return 0
}

// romContent is what the mask ROM holds at addr. The real ROM images are
// not public: the loader returns stable stand-in words (a hash of the
// address), the same on every read and every device, so tools that read
// ROM memory (esptool read_mem, dump_mem) get consistent, plausible data.
// ESP32: internal ROM 0 at 0x40000000-0x4005FFFF and its data alias
// 0x3FF90000-0x3FF9FFFF; ESP8266: 0x40000000-0x4000FFFF.
func (l *Loader) romContent(addr uint32) (uint32, bool) {
	in := addr >= 0x40000000 && addr < 0x40010000
	if l.t.ESP32() {
		in = addr >= 0x40000000 && addr < 0x40060000 || addr >= 0x3FF90000 && addr < 0x3FFA0000
	}
	if !in {
		return 0, false
	}
	h := sha256.Sum256(binary.LittleEndian.AppendUint32([]byte("mosemu mask rom "), addr&^3))
	return binary.LittleEndian.Uint32(h[:]), true
}

func (l *Loader) writeReg(addr, v uint32) {
	if l.t.WriteReg(addr, v) {
		return
	}
	l.regs[addr] = v
	spi, w0 := uint32(0x3FF42000), uint32(0x3FF42080) // SPI1 on ESP32
	if !l.t.ESP32() {
		spi, w0 = 0x60000200, 0x60000240
	}
	if addr == spi && v&(1<<18) != 0 { // USR command start: run it, self-clear
		switch l.regs[spi+0x24] & 0xFFFF { // USR2 command value
		case 0x9F: // RDID
			l.regs[w0] = flashMfg | flashType<<8 | flashCap<<16
		default: // RDSR and the rest: idle status
			l.regs[w0] = 0
		}
		l.regs[spi] = 0
	}
}
