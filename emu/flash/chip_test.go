package flash

import (
	"bytes"
	"errors"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestChipProgramErase(t *testing.T) {
	tests := []struct {
		name  string
		ops   func(c *Chip) error
		off   int64
		want  []byte
		isErr error
	}{
		{"blank reads 0xFF", func(c *Chip) error { return nil }, 100, []byte{0xFF, 0xFF}, nil},
		{"program clears bits", func(c *Chip) error { _, err := c.WriteAt([]byte{0x0F, 0xF0}, 10); return err }, 10, []byte{0x0F, 0xF0}, nil},
		{"program over data ANDs", func(c *Chip) error {
			c.WriteAt([]byte{0x0F}, 10)
			_, err := c.WriteAt([]byte{0x3C}, 10)
			return err
		}, 10, []byte{0x0C}, nil},
		{"erase restores 0xFF", func(c *Chip) error {
			c.WriteAt([]byte{0x00, 0x00}, 4095)
			return c.Erase(0, SectorSize)
		}, 4095, []byte{0xFF, 0x00}, nil},
		{"unaligned erase", func(c *Chip) error { return c.Erase(1, SectorSize) }, 0, nil, ErrUnaligned},
		{"write past end", func(c *Chip) error { _, err := c.WriteAt([]byte{1, 2}, 16*SectorSize-1); return err }, 0, nil, ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, mk := range []func() *Chip{
				func() *Chip { return NewMemory(16 * SectorSize) },
				func() *Chip {
					c, err := Open(filepath.Join(t.TempDir(), "flash.bin"), 16*SectorSize)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
					return c
				},
			} {
				c := mk()
				err := tt.ops(c)
				if tt.isErr != nil {
					if !errors.Is(err, tt.isErr) {
						t.Fatalf("err = %v, want %v", err, tt.isErr)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(tt.want))
				if _, err := c.ReadAt(got, tt.off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, tt.want) {
					t.Fatalf("read %x, want %x", got, tt.want)
				}
			}
		})
	}
}

// TestChipPersistsWithoutClose reopens an image that was never closed, as
// after a kill -9, and checks that every completed program and erase is there.
func TestChipPersistsWithoutClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flash.bin")
	c, err := Open(path, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("secret!"), 1000)
	c.WriteAt(data, 0x190000+5)
	c.WriteAt([]byte{1, 2, 3}, 0x8000)
	c.Erase(0x8000, SectorSize)
	// No Close: the process "dies" here.
	c2, err := Open(path, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got := make([]byte, len(data))
	c2.ReadAt(got, 0x190000+5)
	if !bytes.Equal(got, data) {
		t.Fatal("programmed data lost")
	}
	b := make([]byte, 3)
	c2.ReadAt(b, 0x8000)
	if !bytes.Equal(b, []byte{0xFF, 0xFF, 0xFF}) {
		t.Fatalf("erase lost: %x", b)
	}
	if got, want := c2.UsedSectors(), []int64{0x190, 0x191}; !slices.Equal(got, want) {
		t.Fatalf("used sectors %v, want %v", got, want)
	}
	if _, err := Open(path, 2<<20); err == nil {
		t.Fatal("opening with the wrong size succeeded")
	}
}

// TestChipSparseOnDisk checks that a 4 MiB chip holding 100 KiB costs about
// 100 KiB of disk.
func TestChipSparseOnDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flash.bin")
	c, err := Open(path, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteAt(bytes.Repeat([]byte{0x5A}, 100<<10), 0x190000)
	c.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if disk := st.Blocks * 512; disk > 200<<10 {
		t.Fatalf("4 MiB chip with 100 KiB written uses %d bytes of disk", disk)
	}
}

func BenchmarkChipWrite4K(b *testing.B) {
	c, err := Open(filepath.Join(b.TempDir(), "flash.bin"), 4<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := bytes.Repeat([]byte{0xA5}, SectorSize)
	b.SetBytes(SectorSize)
	for i := 0; b.Loop(); i++ {
		off := int64(i%1024) * SectorSize
		c.Erase(off, SectorSize)
		c.WriteAt(buf, off)
	}
}

// TestBackingFileOpenOnlyWhileWritten checks that the image file is closed
// after a pause in writes, reopened by the next write, and that both
// writes persist.
func TestBackingFileOpenOnlyWhileWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flash.bin")
	c, err := Open(path, 4*SectorSize)
	if err != nil {
		t.Fatal(err)
	}
	if c.OpenFiles() != 0 {
		t.Fatal("image open before any write")
	}
	if _, err := c.WriteAt([]byte{0x12}, 0); err != nil {
		t.Fatal(err)
	}
	if c.OpenFiles() != 1 {
		t.Fatal("image not open while written")
	}
	deadline := time.Now().Add(IdleClose + 5*time.Second)
	for c.OpenFiles() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("image still open after the idle delay")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.Erase(SectorSize, SectorSize); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt([]byte{0x34}, SectorSize+1); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt([]byte{0}, 0); err == nil {
		t.Fatal("write after Close succeeded")
	}
	r, err := Open(path, 4*SectorSize)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b := make([]byte, 2)
	r.ReadAt(b[:1], 0)
	r.ReadAt(b[1:], SectorSize+1)
	if b[0] != 0x12 || b[1] != 0x34 {
		t.Fatalf("reopened image holds % x", b)
	}
}

// TestSectorPoolCopyOnWrite: chips sharing a pool hold one copy of an
// identical sector, and a write to it changes that chip only.
func TestSectorPoolCopyOnWrite(t *testing.T) {
	pool := NewSectorPool()
	a, b := NewMemory(4*SectorSize), NewMemory(4*SectorSize)
	a.SetPool(pool)
	b.SetPool(pool)
	img := bytes.Repeat([]byte{0x5A}, SectorSize)
	for _, c := range []*Chip{a, b} {
		if _, err := c.WriteAt(img, SectorSize); err != nil {
			t.Fatal(err)
		}
	}
	if a.sectors[1] != b.sectors[1] {
		t.Fatal("identical sectors not shared")
	}
	if _, err := a.WriteAt([]byte{0x00}, SectorSize+7); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, SectorSize)
	b.ReadAt(got, SectorSize)
	if !bytes.Equal(got, img) {
		t.Fatal("a write through one chip changed the other")
	}
	a.ReadAt(got, SectorSize)
	if got[7] != 0x00 || got[8] != 0x5A {
		t.Fatalf("chip a reads % x", got[:9])
	}
	if err := b.Erase(SectorSize, SectorSize); err != nil {
		t.Fatal(err)
	}
	b.WriteAt([]byte{0x11}, SectorSize)
	c := NewMemory(4 * SectorSize)
	c.SetPool(pool)
	c.WriteAt(img, SectorSize)
	c.ReadAt(got, SectorSize)
	if !bytes.Equal(got, img) {
		t.Fatal("pooled content changed by an erase and write elsewhere")
	}
}

// TestShareKeepsOneCopyOfPartialSectors: a write that ends inside a sector
// is not pooled by itself; Share pools it, and a later write still copies
// before changing it.
func TestShareKeepsOneCopyOfPartialSectors(t *testing.T) {
	pool := NewSectorPool()
	img := bytes.Repeat([]byte{0x3C}, SectorSize+100) // one whole sector, then 100 bytes
	var chips []*Chip
	for range 2 {
		c := NewMemory(4 * SectorSize)
		c.SetPool(pool)
		if _, err := c.WriteAt(img, SectorSize); err != nil {
			t.Fatal(err)
		}
		chips = append(chips, c)
	}
	a, b := chips[0], chips[1]
	if a.sectors[2] == b.sectors[2] {
		t.Fatal("partly written sectors shared before Share")
	}
	a.Share(SectorSize, int64(len(img)))
	b.Share(SectorSize, int64(len(img)))
	if a.sectors[1] != b.sectors[1] || a.sectors[2] != b.sectors[2] {
		t.Fatal("identical sectors not shared after Share")
	}
	if _, err := b.WriteAt([]byte{0x0C}, 2*SectorSize+200); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, SectorSize)
	a.ReadAt(got, 2*SectorSize)
	want := append(bytes.Repeat([]byte{0x3C}, 100), bytes.Repeat([]byte{Erased}, SectorSize-100)...)
	if !bytes.Equal(got, want) {
		t.Fatal("a write through one chip changed the other's shared sector")
	}
	b.ReadAt(got, 2*SectorSize)
	if got[200] != 0x0C || got[99] != 0x3C || got[100] != Erased {
		t.Fatalf("chip b reads % x .. % x", got[99:101], got[200:201])
	}
	NewMemory(SectorSize).Share(0, SectorSize) // no pool: nothing to do
}

// TestSectorPoolForgetsUnheldContent: a content no chip holds any more
// leaves the pool.
func TestSectorPoolForgetsUnheldContent(t *testing.T) {
	pool := NewSectorPool()
	keep := NewMemory(2 * SectorSize)
	keep.SetPool(pool)
	keep.WriteAt(bytes.Repeat([]byte{0x01}, SectorSize), 0)
	func() {
		c := NewMemory(2 * SectorSize)
		c.SetPool(pool)
		c.WriteAt(bytes.Repeat([]byte{0x02}, SectorSize), 0)
		c.WriteAt(bytes.Repeat([]byte{0x01}, SectorSize), SectorSize)
		if c.sectors[1] != keep.sectors[0] {
			t.Fatal("identical sectors not shared")
		}
	}()
	if n := pool.Len(); n != 2 {
		t.Fatalf("pool holds %d contents, want 2", n)
	}
	for i := 0; i < 100 && pool.Len() > 1; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := pool.Len(); n != 1 {
		t.Fatalf("pool holds %d contents after the only chip holding one went away, want 1", n)
	}
	got := make([]byte, SectorSize)
	keep.ReadAt(got, 0)
	if !bytes.Equal(got, bytes.Repeat([]byte{0x01}, SectorSize)) {
		t.Fatal("the content still held changed")
	}
}
