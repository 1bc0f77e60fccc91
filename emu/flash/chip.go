package flash

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// Chip is a sparse SPI NOR flash: only sectors that hold something other than
// 0xFF take memory, and, when it is backed by a file, disk.
//
// The backing file stores every byte inverted (b^0xFF), so an erased sector
// is a hole in a sparse file: a device that wrote 100 KiB costs about 100 KiB
// on disk whatever the chip size. Every program and erase is written through
// to the file before the call returns, so a process killed at any instant
// leaves the file exactly as the flash would be after a power cut at that
// instant; the filesystem on top is designed to survive that.
type Chip struct {
	mu      sync.RWMutex
	size    int64
	sectors map[int64]*[SectorSize]byte // sector index -> contents; absent = erased
	file    *os.File                    // nil for a memory-only chip

	// OnChange, when set before the chip is used, is called after every
	// program (erase=false) or erase of [off, off+n), outside the chip's
	// lock, e.g. to redraw a lab console's flash map.
	OnChange func(off, n int64, erase bool)
}

// NewMemory returns a blank (all 0xFF) chip of size bytes kept only in memory.
func NewMemory(size int64) *Chip {
	return &Chip{size: size, sectors: make(map[int64]*[SectorSize]byte)}
}

// Open opens or creates the sparse flash image at path. A new image is blank.
// An existing image must have the given size.
func Open(path string, size int64) (*Chip, error) {
	if size <= 0 || size%SectorSize != 0 {
		return nil, fmt.Errorf("flash: size %d is not a positive multiple of %d", size, SectorSize)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	switch {
	case st.Size() == 0:
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, err
		}
	case st.Size() != size:
		f.Close()
		return nil, fmt.Errorf("flash: %s holds a %d-byte chip, want %d bytes", path, st.Size(), size)
	}
	c := NewMemory(size)
	c.file = f
	if err := c.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("flash: loading %s: %w", path, err)
	}
	return c, nil
}

// load reads the data regions of the sparse backing file into memory.
func (c *Chip) load() error {
	fd := int(c.file.Fd())
	var buf [SectorSize]byte
	for off := int64(0); off < c.size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) { // no data after off
				return nil
			}
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for s := data / SectorSize; s*SectorSize < hole && s*SectorSize < c.size; s++ {
			if _, err := c.file.ReadAt(buf[:], s*SectorSize); err != nil && err != io.EOF {
				return err
			}
			var sec [SectorSize]byte
			blank := true
			for i, b := range buf {
				sec[i] = b ^ 0xFF
				blank = blank && sec[i] == Erased
			}
			if !blank {
				c.sectors[s] = &sec
			}
		}
		off = (hole + SectorSize - 1) / SectorSize * SectorSize
	}
	return nil
}

// Size returns the chip size in bytes.
func (c *Chip) Size() int64 { return c.size }

func (c *Chip) check(off, n int64) error {
	if off < 0 || n < 0 || off+n > c.size {
		return fmt.Errorf("%w: [%#x, %#x) beyond %#x", ErrOutOfRange, off, off+n, c.size)
	}
	return nil
}

// ReadAt reads len(p) bytes at off.
func (c *Chip) ReadAt(p []byte, off int64) (int, error) {
	if err := c.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for n := 0; n < len(p); {
		pos := off + int64(n)
		s, in := pos/SectorSize, int(pos%SectorSize)
		chunk := min(len(p)-n, SectorSize-in)
		if sec := c.sectors[s]; sec != nil {
			copy(p[n:n+chunk], sec[in:])
		} else {
			fill(p[n:n+chunk], Erased)
		}
		n += chunk
	}
	return len(p), nil
}

// WriteAt programs p at off: each byte becomes old & new.
func (c *Chip) WriteAt(p []byte, off int64) (int, error) {
	if err := c.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	if c.OnChange != nil {
		defer c.OnChange(off, int64(len(p)), false)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := 0; n < len(p); {
		pos := off + int64(n)
		s, in := pos/SectorSize, int(pos%SectorSize)
		chunk := min(len(p)-n, SectorSize-in)
		src := p[n : n+chunk]
		sec := c.sectors[s]
		if sec == nil {
			if allErased(src) {
				n += chunk
				continue
			}
			sec = new([SectorSize]byte)
			fill(sec[:], Erased)
			c.sectors[s] = sec
		}
		for i, b := range src {
			sec[in+i] &= b
		}
		if c.file != nil {
			inv := make([]byte, chunk)
			for i := range inv {
				inv[i] = sec[in+i] ^ 0xFF
			}
			if _, err := c.file.WriteAt(inv, pos); err != nil {
				return n, fmt.Errorf("flash: persisting program at %#x: %w", pos, err)
			}
		}
		n += chunk
	}
	return len(p), nil
}

// Erase sets [off, off+n) to 0xFF; off and n must be sector aligned.
func (c *Chip) Erase(off, n int64) error {
	if off%SectorSize != 0 || n%SectorSize != 0 {
		return fmt.Errorf("%w: [%#x, +%#x)", ErrUnaligned, off, n)
	}
	if err := c.check(off, n); err != nil {
		return err
	}
	if c.OnChange != nil {
		defer c.OnChange(off, n, true)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := off / SectorSize; s < (off+n)/SectorSize; s++ {
		delete(c.sectors, s)
	}
	if c.file == nil || n == 0 {
		return nil
	}
	err := unix.Fallocate(int(c.file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	// No hole punching on this filesystem: write the inverted 0xFF bytes.
	zero := make([]byte, SectorSize)
	for pos := off; pos < off+n; pos += SectorSize {
		if _, err := c.file.WriteAt(zero, pos); err != nil {
			return fmt.Errorf("flash: persisting erase at %#x: %w", pos, err)
		}
	}
	return nil
}

// UsedSectors returns the indexes of sectors that are not blank, in order.
func (c *Chip) UsedSectors() []int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]int64, 0, len(c.sectors))
	for s := range c.sectors {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Sync flushes the backing file to stable storage.
func (c *Chip) Sync() error {
	if c.file == nil {
		return nil
	}
	return c.file.Sync()
}

// Close syncs and closes the backing file.
func (c *Chip) Close() error {
	if c.file == nil {
		return nil
	}
	err := c.file.Sync()
	if cerr := c.file.Close(); err == nil {
		err = cerr
	}
	c.file = nil
	return err
}

func fill(p []byte, v byte) {
	for i := range p {
		p[i] = v
	}
}

func allErased(p []byte) bool {
	for _, b := range p {
		if b != Erased {
			return false
		}
	}
	return true
}
