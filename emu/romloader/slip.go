// Package romloader is the ESP32/ESP8266 ROM serial bootloader as seen on
// the UART in download mode: SLIP-framed commands to read and write
// registers (efuses, chip magic, UART clock), and to write, erase and
// checksum the SPI flash, as esptool and mos drive it.
package romloader

import "errors"

// SLIP special bytes (RFC 1055).
const (
	slipEnd    = 0xC0
	slipEsc    = 0xDB
	slipEscEnd = 0xDC
	slipEscEsc = 0xDD
)

// ErrBadEscape reports an invalid SLIP escape sequence.
var ErrBadEscape = errors.New("slip: invalid escape")

// Decoder splits a byte stream into SLIP frames. Bytes outside frames are
// ignored, as the ROM does.
type Decoder struct {
	in    bool
	esc   bool
	bad   bool
	frame []byte
}

// MaxFrame bounds a decoded frame (the largest command is a 16 KiB block).
const MaxFrame = 0x4000 + 64

// Feed consumes bytes and returns the complete frames they end. Frames with
// a bad escape or larger than MaxFrame are dropped.
func (d *Decoder) Feed(p []byte) [][]byte {
	var out [][]byte
	for _, c := range p {
		if f, ok := d.Step(c); ok {
			out = append(out, f)
		}
	}
	return out
}

// Step consumes one byte; ok is true when it ends a complete frame.
func (d *Decoder) Step(c byte) (frame []byte, ok bool) {
	if c == slipEnd {
		if d.in && len(d.frame) > 0 && !d.bad {
			frame, ok = d.frame, true
		}
		d.in, d.esc, d.bad, d.frame = true, false, false, nil
		return frame, ok
	}
	if !d.in {
		return nil, false
	}
	switch {
	case d.esc:
		d.esc = false
		switch c {
		case slipEscEnd:
			c = slipEnd
		case slipEscEsc:
			c = slipEsc
		default:
			d.bad = true
		}
	case c == slipEsc:
		d.esc = true
		return nil, false
	}
	if len(d.frame) >= MaxFrame {
		d.bad = true
		return nil, false
	}
	d.frame = append(d.frame, c)
	return nil, false
}

// Encode wraps p in a SLIP frame.
func Encode(p []byte) []byte {
	out := make([]byte, 0, len(p)+8)
	out = append(out, slipEnd)
	for _, c := range p {
		switch c {
		case slipEnd:
			out = append(out, slipEsc, slipEscEnd)
		case slipEsc:
			out = append(out, slipEsc, slipEscEsc)
		default:
			out = append(out, c)
		}
	}
	return append(out, slipEnd)
}
