package rboot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Image magics: 0xE9 starts an ESP8266 "v1" image (segments the ROM or
// rBoot copy to RAM); 0xEA with 0x04 in the segment-count byte starts a
// "v2" image (esptool2 -boot2, what Mongoose OS builds for rBoot): the
// irom0 section, mapped from flash, comes first, then a v1 header.
const (
	MagicV1   = 0xE9
	MagicV2   = 0xEA
	v2Version = 0x04
	// IROMAlign is esptool2's IROM_SECTION_PADDING.
	IROMAlign = 0x1000
	// checksumSeed is CHKSUM_INIT / ESP_CHECKSUM_MAGIC.
	checksumSeed = 0xEF
)

// Header byte values for the flash mode and the size/frequency byte.
const (
	ModeQIO, ModeQOUT, ModeDIO, ModeDOUT = 0, 1, 2, 3
	// SizeFreq4MB80 is a 4 MiB (32 Mbit) chip at 80 MHz, as mos writes it
	// (params 0x024f with DIO).
	SizeFreq4MB80 = 0x4F
)

// Segment is a piece of an image loaded at Addr.
type Segment struct {
	Addr uint32
	Data []byte
}

// BuildV1 returns an ESP8266 v1 image: header, segments (each padded to 4
// bytes), zero padding and the XOR checksum as the last byte of a 16-byte
// block.
func BuildV1(mode, sizeFreq byte, entry uint32, segs []Segment) []byte {
	img := []byte{MagicV1, byte(len(segs)), mode, sizeFreq}
	img = binary.LittleEndian.AppendUint32(img, entry)
	return appendSegments(img, segs, checksumSeed)
}

// BuildV2 returns an rBoot app image as esptool2 -boot2 lays it out: the
// v2 header, the irom0 section (zero load address, padded to 4 KiB) and a
// v1 image of the RAM segments.
func BuildV2(mode, sizeFreq byte, entry uint32, irom []byte, segs []Segment) []byte {
	img := []byte{MagicV2, v2Version, mode, sizeFreq}
	img = binary.LittleEndian.AppendUint32(img, entry)
	n := (len(irom) + IROMAlign - 1) / IROMAlign * IROMAlign
	img = binary.LittleEndian.AppendUint32(img, 0)
	img = binary.LittleEndian.AppendUint32(img, uint32(n))
	img = append(img, irom...)
	img = append(img, make([]byte, n-len(irom))...)
	img = append(img, MagicV1, byte(len(segs)), mode, sizeFreq)
	img = binary.LittleEndian.AppendUint32(img, entry)
	return appendSegments(img, segs, checksumSeed)
}

func appendSegments(img []byte, segs []Segment, sum byte) []byte {
	for _, s := range segs {
		n := (len(s.Data) + 3) &^ 3
		img = binary.LittleEndian.AppendUint32(img, s.Addr)
		img = binary.LittleEndian.AppendUint32(img, uint32(n))
		img = append(img, s.Data...)
		img = append(img, make([]byte, n-len(s.Data))...)
		for _, b := range s.Data {
			sum ^= b
		}
	}
	for len(img)%16 != 15 {
		img = append(img, 0)
	}
	return append(img, sum)
}

// SegmentInfo describes one segment found in flash.
type SegmentInfo struct {
	Addr, Len uint32
	Sum       byte // running checksum after this segment
}

// Checked is an image that passed the check rBoot (and, for v1 images at
// 0x0, the ROM) makes before booting it.
type Checked struct {
	V2       bool
	Mode     byte
	SizeFreq byte
	Entry    uint32
	RunAddr  uint32 // flash address of the v1 header that gets loaded
	IROMLen  uint32 // v2 only
	Segments []SegmentInfo
	Checksum byte // stored, equal to the computed one
}

// Check errors.
var (
	ErrMagic    = errors.New("rboot: no image (bad magic)")
	ErrChecksum = errors.New("rboot: image checksum mismatch")
	ErrRead     = errors.New("rboot: image runs past the end of flash")
)

// Check verifies the image at addr the way rBoot's check_image does:
// header type, every segment readable, XOR checksum of the segment data
// equal to the byte at the end of the 16-byte block after the last one.
// Address 0 and 0xFFFFFFFF (an unset ROM slot) never hold an app image;
// pass allowZero to check the boot loader at 0x0 as the ROM does. The
// rejected image's parsed prefix is returned with the error.
func Check(r io.ReaderAt, addr uint32, allowZero bool) (Checked, error) {
	var c Checked
	if (addr == 0 && !allowZero) || addr == 0xFFFFFFFF {
		return c, ErrMagic
	}
	var h [16]byte
	if _, err := r.ReadAt(h[:], int64(addr)); err != nil {
		return c, ErrRead
	}
	pos := int64(addr) + 8
	count := int(h[1])
	c.Mode, c.SizeFreq, c.Entry = h[2], h[3], binary.LittleEndian.Uint32(h[4:])
	switch {
	case h[0] == MagicV1:
		c.RunAddr = addr
	case h[0] == MagicV2 && h[1] == v2Version:
		c.V2 = true
		c.IROMLen = binary.LittleEndian.Uint32(h[12:])
		run := uint64(addr) + uint64(c.IROMLen) + 16
		if run > 0xFFFFFFFF {
			return c, ErrRead
		}
		c.RunAddr = uint32(run)
		if _, err := r.ReadAt(h[:8], int64(c.RunAddr)); err != nil {
			return c, ErrRead
		}
		count = int(h[1]) // rBoot takes the count without checking the magic
		c.Mode, c.SizeFreq, c.Entry = h[2], h[3], binary.LittleEndian.Uint32(h[4:])
		pos = int64(c.RunAddr) + 8
	default:
		return c, ErrMagic
	}
	sum := byte(checksumSeed)
	buf := make([]byte, 4096)
	for i := 0; i < count; i++ {
		if _, err := r.ReadAt(h[:8], pos); err != nil {
			return c, ErrRead
		}
		s := SegmentInfo{Addr: binary.LittleEndian.Uint32(h[:]), Len: binary.LittleEndian.Uint32(h[4:])}
		pos += 8
		for left := int64(s.Len); left > 0; {
			n := min(left, int64(len(buf)))
			if _, err := r.ReadAt(buf[:n], pos); err != nil {
				return c, ErrRead
			}
			for _, b := range buf[:n] {
				sum ^= b
			}
			pos += n
			left -= n
		}
		s.Sum = sum
		c.Segments = append(c.Segments, s)
	}
	if _, err := r.ReadAt(h[:1], pos|0x0F); err != nil {
		return c, ErrRead
	}
	c.Checksum = h[0]
	if h[0] != sum {
		return c, fmt.Errorf("%w: stored 0x%02x, computed 0x%02x", ErrChecksum, h[0], sum)
	}
	return c, nil
}
