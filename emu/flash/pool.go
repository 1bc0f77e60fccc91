package flash

import (
	"crypto/sha256"
	"runtime"
	"sync"
	"weak"
)

// SectorPool shares identical sector contents between the chips of a
// process: every device of a fleet carries the same factory image
// (bootloader, partition table, application, filesystem) and boots to the
// same filesystem metadata, which would otherwise be held once per device.
// Shared sectors are copied on write. The pool holds its sectors weakly: a
// content no chip holds any more is forgotten.
type SectorPool struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]weak.Pointer[[SectorSize]byte]
}

// NewSectorPool returns an empty pool.
func NewSectorPool() *SectorPool {
	return &SectorPool{m: map[[sha256.Size]byte]weak.Pointer[[SectorSize]byte]{}}
}

// intern returns the pool's copy of sec's content, adding sec if new.
func (p *SectorPool) intern(sec *[SectorSize]byte) *[SectorSize]byte {
	return p.lookup(sec[:], func() *[SectorSize]byte { return sec })
}

// internBytes returns the pool's copy of content b (one sector), adding a
// copy of b if new.
func (p *SectorPool) internBytes(b []byte) *[SectorSize]byte {
	return p.lookup(b, func() *[SectorSize]byte {
		sec := new([SectorSize]byte)
		copy(sec[:], b)
		return sec
	})
}

// lookup returns the pool's sector holding b, or adds the one made by
// make.
func (p *SectorPool) lookup(b []byte, make func() *[SectorSize]byte) *[SectorSize]byte {
	h := sha256.Sum256(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if w, ok := p.m[h]; ok {
		if q := w.Value(); q != nil && string(q[:]) == string(b) {
			return q
		}
	}
	sec := make()
	p.m[h] = weak.Make(sec)
	runtime.AddCleanup(sec, p.forget, h)
	return sec
}

// forget drops the entry for content hash h once its sector is gone.
func (p *SectorPool) forget(h [sha256.Size]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w, ok := p.m[h]; ok && w.Value() == nil {
		delete(p.m, h)
	}
}

// Len returns the number of distinct sector contents in the pool.
func (p *SectorPool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// SetPool makes the chip share its full-sector contents through p: the
// sectors it holds now and every sector written whole from now on.
func (c *Chip) SetPool(p *SectorPool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pool = p
	for s, sec := range c.sectors {
		c.internLocked(s, sec)
	}
}

// internLocked replaces sector s by the pool's copy of its content; from
// then on the sector is shared and a write copies it first.
func (c *Chip) internLocked(s int64, sec *[SectorSize]byte) {
	if c.pool == nil {
		return
	}
	c.sectors[s] = c.pool.intern(sec)
	c.shared.set(s)
}

// Share puts the sectors overlapping [off, off+n) that the chip holds on
// its own into the pool, so that chips holding the same bytes there keep
// one copy between them: the factory image every device of a fleet is
// written with (whose last sectors are only partly programmed, and so not
// pooled by WriteAt), the filesystem metadata they all boot to. A sector
// that turns out unique costs a hash, and a copy at its next write.
// Without a pool it does nothing.
func (c *Chip) Share(off, n int64) {
	if n <= 0 || c.check(off, n) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pool == nil {
		return
	}
	for s := off / SectorSize; s <= (off+n-1)/SectorSize; s++ {
		if sec := c.sectors[s]; sec != nil && !c.shared.has(s) {
			c.internLocked(s, sec)
		}
	}
}

// sectorSet is a set of sector indexes, one bit each: a 4 MiB chip's
// takes 128 bytes where a map of its shared sectors took a kilobyte.
type sectorSet []uint64

func (b sectorSet) has(s int64) bool {
	return s/64 < int64(len(b)) && b[s/64]&(1<<(s%64)) != 0
}

func (b *sectorSet) set(s int64) {
	if n := int(s/64) + 1; n > len(*b) {
		*b = append(*b, make([]uint64, n-len(*b))...)
	}
	(*b)[s/64] |= 1 << (s % 64)
}

func (b sectorSet) clear(s int64) {
	if s/64 < int64(len(b)) {
		b[s/64] &^= 1 << (s % 64)
	}
}
