package rboot

import (
	"bytes"
	"errors"
	"testing"
)

func TestLayoutFor(t *testing.T) {
	for _, tc := range []struct {
		size             int64
		app0, app1       uint32
		fs0, fs1, fsSize uint32
		rf, sys          uint32
	}{
		// platforms/esp8266/Makefile.build layout comments.
		{4 << 20, 0x100000, 0x200000, 0x8000, 0x300000, 0x40000, 0x3FB000, 0x3FC000},
		{2 << 20, 0x8000, 0x108000, 0xDB000, 0x1DB000, 0x20000, 0x1FB000, 0x1FC000},
		{1 << 20, 0x8000, 0, 0xDB000, 0, 0x20000, 0xFB000, 0xFC000},
	} {
		l, err := LayoutFor(tc.size)
		if err != nil {
			t.Fatal(err)
		}
		c := l.Default
		if c.ROMs[0] != tc.app0 || c.ROMs[1] != tc.app1 || c.FSAddrs[0] != tc.fs0 || c.FSAddrs[1] != tc.fs1 ||
			c.FSSizes[0] != tc.fsSize || l.RFCal != tc.rf || l.SysParams != tc.sys || c.Count != 2 {
			t.Errorf("%d MiB: %+v", tc.size>>20, l)
		}
	}
	// ROM_SIZE of the 4 MiB build: the 1 MiB slot less the image header.
	if l, _ := LayoutFor(4 << 20); l.Default.ROMSizes[0] != 0xFFFF0 {
		t.Errorf("4 MiB ROM size %#x", l.Default.ROMSizes[0])
	}
	if _, err := LayoutFor(512 << 10); err == nil {
		t.Error("512 KiB flash has no Mongoose OS layout")
	}
}

func TestConfigRoundTrip(t *testing.T) {
	l, _ := LayoutFor(4 << 20)
	c := l.Default
	c.CurrentROM, c.PreviousROM, c.IsFirstBoot, c.UserFlags = 1, 0, 1, 0xA5
	b := c.Marshal()
	if len(b) != ConfigSize || ConfigSize != 80 || b[0] != 0xE1 || b[1] != 0x01 || b[5] != 2 {
		t.Fatalf("marshal: %x", b)
	}
	// roms[0] at offset 12, fs_addresses[0] at 12+32.
	if !bytes.Equal(b[12:16], []byte{0, 0, 0x10, 0}) || !bytes.Equal(b[44:48], []byte{0, 0x80, 0, 0}) {
		t.Fatalf("field offsets: %x", b)
	}
	got, err := ParseConfig(append(b, 0xFF, 0xFF))
	if err != nil || got != c {
		t.Fatalf("parse: %+v %v", got, err)
	}
	for _, bad := range [][]byte{bytes.Repeat([]byte{0xFF}, 4096), b[:79], append([]byte{0xE1, 0x02}, b[2:]...)} {
		if _, err := ParseConfig(bad); !errors.Is(err, ErrNoConfig) {
			t.Errorf("%x...: %v", bad[:4], err)
		}
	}
}

// flashAt places img at addr in a blank 4 MiB flash.
func flashAt(addr int, img []byte) *bytes.Reader {
	f := bytes.Repeat([]byte{0xFF}, 4<<20)
	copy(f[addr:], img)
	return bytes.NewReader(f)
}

func TestCheckImages(t *testing.T) {
	segs := []Segment{{0x40100000, []byte("code!")}, {0x3FFE8000, []byte{1, 2, 3, 4, 5, 6, 7, 8}}}
	v1 := BuildV1(ModeDIO, SizeFreq4MB80, 0x40100004, segs)
	if len(v1)%16 != 0 || v1[0] != 0xE9 || v1[1] != 2 {
		t.Fatalf("v1 layout: %x", v1)
	}
	sum := byte(0xEF)
	for _, s := range segs {
		for _, b := range s.Data {
			sum ^= b
		}
	}
	if v1[len(v1)-1] != sum {
		t.Fatalf("v1 checksum %#x, want %#x", v1[len(v1)-1], sum)
	}
	c, err := Check(flashAt(0, v1), 0, true)
	if err != nil || c.V2 || c.RunAddr != 0 || len(c.Segments) != 2 || c.Segments[0].Len != 8 || c.Entry != 0x40100004 {
		t.Fatalf("v1 check: %+v %v", c, err)
	}
	if _, err := Check(flashAt(0, v1), 0, false); !errors.Is(err, ErrMagic) {
		t.Fatalf("address 0 is never an app slot: %v", err)
	}

	irom := bytes.Repeat([]byte{0x5A}, 5000)
	v2 := BuildV2(ModeDIO, SizeFreq4MB80, 0x40100004, irom, segs)
	c, err = Check(flashAt(0x100000, v2), 0x100000, false)
	if err != nil || !c.V2 || c.IROMLen != 0x2000 || c.RunAddr != 0x100000+16+0x2000 {
		t.Fatalf("v2 check: %+v %v", c, err)
	}
	// The irom section is outside the checksum; the RAM segments are not.
	bad := append([]byte(nil), v2...)
	bad[20] ^= 1
	if _, err := Check(flashAt(0x100000, bad), 0x100000, false); err != nil {
		t.Fatalf("irom byte changed: %v", err)
	}
	bad[16+0x2000+8+8] ^= 1
	if _, err := Check(flashAt(0x100000, bad), 0x100000, false); !errors.Is(err, ErrChecksum) {
		t.Fatalf("segment byte changed: %v", err)
	}
	// Blank, unset and truncated slots.
	if _, err := Check(flashAt(0, nil), 0x100000, false); !errors.Is(err, ErrMagic) {
		t.Fatalf("blank slot: %v", err)
	}
	if _, err := Check(flashAt(0, nil), 0xFFFFFFFF, false); !errors.Is(err, ErrMagic) {
		t.Fatalf("unset slot: %v", err)
	}
	if _, err := Check(flashAt(4<<20-16, v1[:16]), 4<<20-16, false); !errors.Is(err, ErrRead) {
		t.Fatalf("image past the end of flash: %v", err)
	}
}

// FuzzCheck feeds arbitrary flash contents to the image check: it must
// never panic, and an accepted image must have its checksum where rBoot
// reads it.
func FuzzCheck(f *testing.F) {
	f.Add(BuildV1(ModeDIO, SizeFreq4MB80, 0x40100004, []Segment{{0x40100000, []byte("x")}}))
	f.Add(BuildV2(ModeDIO, SizeFreq4MB80, 0x40100004, []byte("irom"), []Segment{{0x40100000, []byte("x")}}))
	f.Add([]byte{0xEA, 0x04, 2, 0x4F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, img []byte) {
		r := bytes.NewReader(img)
		c, err := Check(r, 0, true)
		if err == nil && len(c.Segments) > 255 {
			t.Fatalf("%d segments", len(c.Segments))
		}
	})
}

// FuzzParseConfig checks that any sector parses or is rejected, and that
// an accepted config survives a round trip.
func FuzzParseConfig(f *testing.F) {
	l, _ := LayoutFor(4 << 20)
	f.Add(l.Default.Marshal())
	f.Add(bytes.Repeat([]byte{0xFF}, 80))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Marshal()[:10], b[:10]) || !bytes.Equal(c.Marshal()[12:], b[12:ConfigSize]) {
			t.Fatalf("round trip of %x", b[:ConfigSize])
		}
		if again, _ := ParseConfig(c.Marshal()); again != c {
			t.Fatalf("round trip: %+v != %+v", again, c)
		}
	})
}
