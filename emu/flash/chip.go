package flash

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

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
//
// The backing file is open only while the chip is being written: it is
// closed (after an fsync) once writes have paused for IdleClose, so that
// a process hosting thousands of idle devices holds no descriptor for them.
type Chip struct {
	mu      sync.RWMutex
	size    int64
	sectors map[int64]*[SectorSize]byte // sector index -> contents; absent = erased
	path    string                      // backing file; "" for a memory-only chip
	file    *os.File                    // open backing file, nil while idle
	idle    *time.Timer                 // closes file after IdleClose without writes
	closed  bool
	noSync  bool        // the host syncs the filesystem: no fsync when closing an idle file
	pool    *SectorPool // shares identical sectors between chips; nil = none
	shared  sectorSet   // sectors pointing into the pool (copy on write)

	// OnChange, when set before the chip is used, is called after every
	// program (erase=false) or erase of [off, off+n), outside the chip's
	// lock, e.g. to redraw a lab console's flash map.
	OnChange func(off, n int64, erase bool)
}

// DeferSync, when on, closes the idle backing file without fsync: the host
// makes the filesystem durable itself (a fleet's periodic syncfs), and so
// does Close.
func (c *Chip) DeferSync(on bool) {
	c.mu.Lock()
	c.noSync = on
	c.mu.Unlock()
}

// IdleClose is how long the backing file stays open after the last write.
const IdleClose = time.Second

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
	err = c.load()
	c.file = nil
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("flash: loading %s: %w", path, err)
	}
	c.path = path
	return c, nil
}

// backing returns the open backing file, opening it if needed, or nil for
// a memory-only chip. c.mu is held for writing.
func (c *Chip) backing() (*os.File, error) {
	if c.path == "" {
		return nil, nil
	}
	if c.closed {
		return nil, errors.New("flash: chip closed")
	}
	if c.file == nil {
		f, err := os.OpenFile(c.path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("flash: reopening the image: %w", err)
		}
		c.file = f
	}
	if c.idle == nil {
		c.idle = time.AfterFunc(IdleClose, c.closeIdle)
	} else {
		c.idle.Reset(IdleClose)
	}
	return c.file, nil
}

// closeIdle syncs and closes the backing file after a pause in writes.
func (c *Chip) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file == nil {
		return
	}
	if !c.noSync {
		c.file.Sync()
	}
	c.file.Close()
	c.file = nil
}

// OpenFiles reports whether the backing file is open now (1) or not (0).
func (c *Chip) OpenFiles() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.file != nil {
		return 1
	}
	return 0
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
		if sec != nil && c.shared.has(s) { // copy on write
			own := *sec
			sec = &own
			c.sectors[s] = sec
			c.shared.clear(s)
		}
		switch {
		case sec == nil && allErased(src):
			n += chunk
			continue
		case sec == nil && chunk == SectorSize && c.pool != nil:
			// A whole sector programmed on an erased one holds src: the
			// pool's copy when it has one (a fleet's factory image).
			sec = c.pool.internBytes(src)
			c.sectors[s] = sec
			c.shared.set(s)
		default:
			if sec == nil {
				sec = new([SectorSize]byte)
				fill(sec[:], Erased)
				c.sectors[s] = sec
			}
			for i, b := range src {
				sec[in+i] &= b
			}
			if chunk == SectorSize {
				c.internLocked(s, sec)
			}
		}
		if f, err := c.backing(); err != nil {
			return n, err
		} else if f != nil {
			var buf [SectorSize]byte // on the stack: no garbage per write
			inv := buf[:chunk]
			for i := range inv {
				inv[i] = sec[in+i] ^ 0xFF
			}
			if _, err := f.WriteAt(inv, pos); err != nil {
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
		c.shared.clear(s)
	}
	if c.path == "" || n == 0 {
		return nil
	}
	f, err := c.backing()
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	// No hole punching on this filesystem: write the inverted 0xFF bytes.
	zero := make([]byte, SectorSize)
	for pos := off; pos < off+n; pos += SectorSize {
		if _, err := f.WriteAt(zero, pos); err != nil {
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
// An idle chip has nothing to flush: its file was synced when it closed.
func (c *Chip) Sync() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file == nil {
		return nil
	}
	return c.file.Sync()
}

// Close syncs and closes the backing file; later writes fail.
func (c *Chip) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.idle != nil {
		c.idle.Stop()
	}
	if c.file == nil {
		return nil
	}
	var err error
	if !c.noSync {
		err = c.file.Sync()
	}
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
