package romloader

import "bytes"

// Stub start-up as the ESP8266 (and ESP32) ROM sees it. The ROM cannot tell
// one stub from another: it copies what MEM_DATA sent and, on MEM_END with
// an entry point, jumps there. What answers next depends on the code that
// was uploaded:
//
//   - mos's flasher stub (mos cli/flash/esp/stub): uploaded as three
//     separate MEM_BEGIN..MEM_END sequences, an 8-byte parameter block (ROM
//     and flasher baud rates) at params_start, the data segment, then the
//     code at params_start+8 with the entry. mos's stub.json for the
//     ESP8266: params 0x40100000, code 0x40100008 (7860 bytes), entry
//     0x40101ddc, data 0x3fff7030 (4112 bytes); ESP32: params 0x40090000,
//     code 0x40090008, entry 0x40091040, data 0x3ffdf030. It starts by
//     sending the ROM's UART clock divider in one frame, then speaks its
//     own SLIP protocol (mosstub.go).
//   - any other code whose entry lies in uploaded memory is taken for
//     esptool's stub, which greets with "OHAI".
//   - an entry outside everything uploaded makes the ROM jump into memory
//     that holds no code: the chip crashes and stays silent until the host
//     resets it (here: its next SYNC, the pty having no RTS line).

// startStub handles MEM_END(0, entry).
func (l *Loader) startStub(entry uint32) {
	if !l.uploaded(entry) {
		l.hung = true
		return
	}
	// The mos stub is uploaded as an 8-byte parameter block (ROM and
	// flasher baud rates) followed by its code right after it.
	for addr, size := range l.mem {
		if _, code := l.mem[addr+8]; size == 8 && code {
			l.startMosStub()
			return
		}
	}
	l.esptoolStub = true
	l.out.Write(Encode([]byte("OHAI")))
}

// uploaded reports whether addr lies in memory a MEM_BEGIN announced.
func (l *Loader) uploaded(addr uint32) bool {
	for a, n := range l.mem {
		if addr >= a && uint64(addr) < uint64(a)+uint64(n) {
			return true
		}
	}
	return false
}

// syncMagic starts the data of a ROM SYNC request.
var syncMagic = []byte{0x07, 0x07, 0x12, 0x20}

// isROMSync reports whether f is a ROM loader SYNC request.
func isROMSync(f []byte) bool {
	return len(f) == 8+36 && f[0] == 0x00 && f[1] == CmdSync && bytes.HasPrefix(f[8:], syncMagic)
}

// resetToROM puts the chip back into the ROM loader: whatever ran from RAM
// (a stub, crashed code) is gone, as after a reset with GPIO0 held low.
func (l *Loader) resetToROM() {
	if l.inflater != nil {
		l.inflater.finish()
		l.inflater = nil
	}
	l.stub, l.esptoolStub, l.hung, l.rd = nil, false, false, nil
	l.mem, l.writing = nil, false
}

// romUARTDivider is the UART0 clock divider the ROM set up for 115200 baud,
// which the mos stub reports in its first frame: on an ESP32 the APB clock
// is 40 MHz and the register holds the integer part << 4 (plus a fraction,
// zero here); on an ESP8266 the ROM runs the UART from 52 MHz (26 MHz
// crystal, PLL not yet set) and the register is the plain integer.
func romUARTDivider(esp32 bool) uint32 {
	if esp32 {
		return uint32(40_000_000/115200) << 4
	}
	return 52_000_000 / 115200
}
