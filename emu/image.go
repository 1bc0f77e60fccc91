package emu

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/mosemu/mosemu/emu/flash"
)

// Firmware identity reported in the boot banner and Sys.GetInfo.
const (
	AppName   = "mosemu"
	FWVersion = "1.0"
	MGVersion = "2.20.0"
	MGID      = "20230101-000000/2.20.0-mosemu"
	// FWBuildID is the factory build's build id (fw_id).
	FWBuildID = "20260101-000000/" + FWVersion + "-mosemu"
)

// ESP image format (esp-idf esp_image_format.h, esptool bin_image.py): a
// 24-byte header (magic 0xE9, segment count, SPI mode, size/frequency,
// entry, then the extended header whose last byte says whether a SHA-256
// follows), segments (load address, length, data), padding so that the
// checksum byte ends a 16-byte line, and optionally the SHA-256 of
// everything before it.
const (
	imageMagic      = 0xE9
	imageHeaderLen  = 24
	imageMaxSegs    = 16
	imageChecksum0  = 0xEF
	appDescMagic    = 0xABCD5432
	imageHashOffset = 23 // hash_appended byte in the extended header
)

// imageSegment is one segment of an ESP image.
type imageSegment struct {
	Addr  uint32 // load address
	Len   uint32
	FOff  int64 // flash offset of the segment data
	Chsum byte  // running checksum contribution (XOR of the data)
}

// espImageInfo is a parsed image header.
type espImageInfo struct {
	Mode, SizeFreq byte
	Entry          uint32
	Segments       []imageSegment
	HashAppended   bool
	Len            int64 // bytes including checksum (and hash when appended)
}

// imageError is why an image does not load, in the words of the code that
// checks it (the ROM or esp_image_format.c).
type imageError struct {
	badMagic bool
	magic    uint32 // first word, for "invalid header: 0x%08x"
	msg      string
}

func (e *imageError) Error() string { return e.msg }

// parseImage reads and verifies the image at off within dev (at most limit
// bytes): header, segment bounds, checksum, and the appended SHA-256. It
// never reads past limit, whatever the header says.
func parseImage(dev flash.Device, off, limit int64) (*espImageInfo, *imageError) {
	hdr := make([]byte, imageHeaderLen)
	if limit < imageHeaderLen || off+imageHeaderLen > dev.Size() {
		return nil, &imageError{msg: "image does not fit in flash"}
	}
	dev.ReadAt(hdr, off)
	if hdr[0] != imageMagic {
		return nil, &imageError{badMagic: true, magic: binary.LittleEndian.Uint32(hdr), msg: fmt.Sprintf("image at 0x%x has invalid magic byte", off)}
	}
	n := int(hdr[1])
	if n == 0 || n > imageMaxSegs {
		return nil, &imageError{magic: binary.LittleEndian.Uint32(hdr), msg: fmt.Sprintf("image at 0x%x has too many segments (%d)", off, n)}
	}
	info := &espImageInfo{Mode: hdr[2], SizeFreq: hdr[3], Entry: binary.LittleEndian.Uint32(hdr[4:]), HashAppended: hdr[imageHashOffset] == 1}
	end := min(off+limit, dev.Size())
	pos := off + imageHeaderLen
	sum := byte(imageChecksum0)
	buf := make([]byte, 4096)
	for i := 0; i < n; i++ {
		if pos+8 > end {
			return nil, &imageError{msg: fmt.Sprintf("image at 0x%x: segment %d header past the end of the partition", off, i)}
		}
		var sh [8]byte
		dev.ReadAt(sh[:], pos)
		seg := imageSegment{Addr: binary.LittleEndian.Uint32(sh[:]), Len: binary.LittleEndian.Uint32(sh[4:]), FOff: pos + 8}
		if seg.Len > 16<<20 || seg.FOff+int64(seg.Len) > end {
			return nil, &imageError{msg: fmt.Sprintf("image at 0x%x: segment %d length 0x%x too long", off, i, seg.Len)}
		}
		for p := int64(0); p < int64(seg.Len); p += int64(len(buf)) {
			b := buf[:min(int64(len(buf)), int64(seg.Len)-p)]
			dev.ReadAt(b, seg.FOff+p)
			for _, c := range b {
				seg.Chsum ^= c
			}
		}
		sum ^= seg.Chsum
		info.Segments = append(info.Segments, seg)
		pos = seg.FOff + int64(seg.Len)
	}
	// Padding, then the checksum byte at the end of a 16-byte line.
	pos += 15 - (pos-off)%16
	if pos+1 > end {
		return nil, &imageError{msg: fmt.Sprintf("image at 0x%x: checksum past the end of the partition", off)}
	}
	var c [1]byte
	dev.ReadAt(c[:], pos)
	if c[0] != sum {
		return nil, &imageError{msg: fmt.Sprintf("Checksum failed. Calculated 0x%x read 0x%x", sum, c[0])}
	}
	pos++
	if info.HashAppended {
		if pos+32 > end {
			return nil, &imageError{msg: fmt.Sprintf("image at 0x%x: hash past the end of the partition", off)}
		}
		h := sha256.New()
		for p := off; p < pos; p += int64(len(buf)) {
			b := buf[:min(int64(len(buf)), pos-p)]
			dev.ReadAt(b, p)
			h.Write(b)
		}
		want := make([]byte, 32)
		dev.ReadAt(want, pos)
		if !bytes.Equal(h.Sum(nil), want) {
			return nil, &imageError{msg: "Image hash failed - image is corrupt"}
		}
		pos += 32
	}
	info.Len = pos - off
	return info, nil
}

// imageSeg is a segment to put in a built image.
type imageSeg struct {
	addr uint32
	data []byte
}

// buildImage assembles an ESP32 image: header (DIO, 4 MB, 40 MHz), the
// segments, checksum and, when withHash, the SHA-256.
func buildImage(entry uint32, segs []imageSeg, withHash bool) []byte {
	img := []byte{imageMagic, byte(len(segs)), 2, 0x20} // magic, segments, DIO, 4MB@40MHz
	img = binary.LittleEndian.AppendUint32(img, entry)
	img = append(img, 0xEE, 0, 0, 0) // WP pin, SPI pin drive
	img = append(img, 0, 0, 0)       // chip id ESP32, min revision
	img = append(img, make([]byte, 8)...)
	if withHash {
		img = append(img, 1)
	} else {
		img = append(img, 0)
	}
	sum := byte(imageChecksum0)
	for _, s := range segs {
		img = binary.LittleEndian.AppendUint32(img, s.addr)
		img = binary.LittleEndian.AppendUint32(img, uint32(len(s.data)))
		img = append(img, s.data...)
		for _, b := range s.data {
			sum ^= b
		}
	}
	for (len(img)+1)%16 != 0 {
		img = append(img, 0)
	}
	img = append(img, sum)
	if withHash {
		h := sha256.Sum256(img)
		img = append(img, h[:]...)
	}
	return img
}

// appImage builds the factory application image: a DROM segment holding the
// esp_app_desc_t (what `esptool image_info` and the bootloader read), the
// Mongoose OS code stand-in, SHA-256 appended as ESP-IDF builds do.
func appImage(project, version string, built time.Time) []byte {
	desc := make([]byte, 256)
	binary.LittleEndian.PutUint32(desc[0:], appDescMagic)
	copy(desc[16:48], version)
	copy(desc[48:80], project)
	copy(desc[80:96], built.UTC().Format("15:04:05"))
	copy(desc[96:112], built.UTC().Format("Jan _2 2006"))
	copy(desc[112:144], "v4.4.4")
	return buildImage(0x40081000, []imageSeg{{0x3F400020, desc}, {0x40080000, standIn("iram", 0x400)}}, true)
}

// bootloaderImage builds the factory 2nd-stage bootloader image: segments
// at the load addresses and sizes of an ESP-IDF v4.4 bootloader (what the
// ROM prints as load:...,len:...), filled with stand-in bytes.
func bootloaderImage() []byte {
	return buildImage(0x40080694, []imageSeg{
		{0x3fff0030, standIn("dram", 6612)},
		{0x40078000, standIn("iram_loader", 14780)},
		{0x40080400, standIn("iram", 3792)},
	}, false)
}

// standIn is deterministic filler for code the emulator does not run.
func standIn(label string, n int) []byte {
	b := make([]byte, 0, n+32)
	for i := 0; len(b) < n; i++ {
		s := sha256.Sum256([]byte(fmt.Sprintf("mosemu %s %d", label, i)))
		b = append(b, s[:]...)
	}
	return b[:n]
}
