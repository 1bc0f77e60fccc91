package emu

import (
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/flash"
)

func TestImageRoundTrip(t *testing.T) {
	fl := flash.NewMemory(1 << 20)
	img := appImage(AppName, FWVersion, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	fl.WriteAt(img, 0x10000)
	info, ierr := parseImage(fl, 0x10000, 0x80000)
	if ierr != nil {
		t.Fatal(ierr)
	}
	if info.Len != int64(len(img)) || !info.HashAppended || len(info.Segments) != 2 || info.Segments[0].Addr != 0x3F400020 {
		t.Fatalf("parsed %+v from a %d-byte image", info, len(img))
	}
	if _, ierr := parseImage(fl, 0x10000, int64(len(img))-1); ierr == nil {
		t.Fatal("image longer than its partition accepted")
	}
	bl := bootloaderImage()
	fl.WriteAt(bl, 0x1000)
	if info, ierr := parseImage(fl, 0x1000, 0x7000); ierr != nil || info.Entry != 0x40080694 || len(info.Segments) != 3 {
		t.Fatalf("bootloader image: %+v %v", info, ierr)
	}
}

// FuzzParseImage feeds arbitrary flash contents to the image checks of the
// ROM and the bootloader: they must reject or accept, never panic or read
// past the partition.
func FuzzParseImage(f *testing.F) {
	f.Add(appImage(AppName, FWVersion, time.Unix(0, 0)))
	f.Add(bootloaderImage())
	f.Add([]byte{0xE9, 16, 2, 0x20, 0, 0, 0, 0})
	f.Add([]byte{0xE9, 1, 2, 0x20, 0, 0, 0, 0, 0xEE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		fl := flash.NewMemory(1 << 17)
		fl.WriteAt(b, 0x1000)
		limit := int64(len(b))
		info, ierr := parseImage(fl, 0x1000, limit)
		if ierr == nil && (info.Len > limit || len(info.Segments) == 0) {
			t.Fatalf("accepted an image of %d bytes in %d", info.Len, limit)
		}
	})
}
