package ota

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ESP32 application image constants (esp_image_format.h, esp_app_format.h).
const (
	ImageMagic      = 0xE9
	imageHeaderSize = 24
	segHeaderSize   = 8
	maxSegments     = 16
	appDescMagic    = 0xABCD5432
)

// ErrImage marks an app image the bootloader would refuse.
var ErrImage = errors.New("invalid app image")

// AppDesc is the identity an ESP-IDF app carries in its esp_app_desc_t.
type AppDesc struct {
	Project, Version, Time, Date, IDFVersion string
}

// ImageInfo is what VerifyImage learns from a valid image.
type ImageInfo struct {
	Entry uint32
	Size  int // bytes covered by the image, checksum and hash included
	Desc  *AppDesc
}

// VerifyImage checks an ESP32 app image as esp_image_verify does: the
// 0xE9 header, the segment table, the XOR checksum and, when the header says
// one is appended, the SHA-256 digest. The image is read from r, which holds
// at most limit bytes (a partition), one segment at a time.
func VerifyImage(r io.ReaderAt, limit int64) (ImageInfo, error) {
	read := func(off int64, n int) ([]byte, error) {
		if n < 0 || off+int64(n) > limit {
			return nil, fmt.Errorf("%w: %d bytes at 0x%x run past the end (0x%x)", ErrImage, n, off, limit)
		}
		b := make([]byte, n)
		if _, err := r.ReadAt(b, off); err != nil {
			return nil, err
		}
		return b, nil
	}
	h, err := read(0, imageHeaderSize)
	if err != nil {
		return ImageInfo{}, err
	}
	if h[0] != ImageMagic {
		return ImageInfo{}, fmt.Errorf("%w: bad magic 0x%02x", ErrImage, h[0])
	}
	nseg := int(h[1])
	if nseg == 0 || nseg > maxSegments {
		return ImageInfo{}, fmt.Errorf("%w: %d segments", ErrImage, nseg)
	}
	info := ImageInfo{Entry: binary.LittleEndian.Uint32(h[4:])}
	hashAppended := h[23] == 1
	off := int64(imageHeaderSize)
	sum := byte(0xEF)
	for i := 0; i < nseg; i++ {
		sh, err := read(off, segHeaderSize)
		if err != nil {
			return ImageInfo{}, err
		}
		n := int64(binary.LittleEndian.Uint32(sh[4:]))
		off += segHeaderSize
		if n > limit-off {
			return ImageInfo{}, fmt.Errorf("%w: segment %d (%d bytes) runs past the end", ErrImage, i, n)
		}
		seg, err := read(off, int(n))
		if err != nil {
			return ImageInfo{}, err
		}
		for _, c := range seg {
			sum ^= c
		}
		if i == 0 && len(seg) >= 256 && binary.LittleEndian.Uint32(seg) == appDescMagic {
			info.Desc = &AppDesc{Version: cstr(seg[16:48]), Project: cstr(seg[48:80]),
				Time: cstr(seg[80:96]), Date: cstr(seg[96:112]), IDFVersion: cstr(seg[112:144])}
		}
		off += n
	}
	for (off+1)%16 != 0 {
		off++
	}
	c, err := read(off, 1)
	if err != nil {
		return ImageInfo{}, err
	}
	if c[0] != sum {
		return ImageInfo{}, fmt.Errorf("%w: checksum 0x%02x, computed 0x%02x", ErrImage, c[0], sum)
	}
	off++
	if hashAppended {
		all, err := read(0, int(off)+32)
		if err != nil {
			return ImageInfo{}, err
		}
		h := sha256.Sum256(all[:off])
		if !bytes.Equal(h[:], all[off:]) {
			return ImageInfo{}, fmt.Errorf("%w: SHA-256 mismatch", ErrImage)
		}
		off += 32
	}
	info.Size = int(off)
	return info, nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
