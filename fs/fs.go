package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/mosemu/mosemu/emu/flash"
)

// Errors with the meaning the firmware's VFS gives them.
var (
	ErrNoSpace  = errors.New("littlefs: no space left on device")
	ErrNotEmpty = errors.New("littlefs: directory not empty")
)

// FS is a mounted littlefs. It is safe for concurrent use.
type FS struct {
	mu         sync.Mutex
	dev        flash.Device
	blockCount uint32
	root       *dirNode
	chain      []*mdir // every metadata pair, in tail order (root first)
	used       []bool  // block in use by the committed state or an open write
	cursor     uint32  // allocation cursor
	mounted    bool
}

// dirNode is a directory: its metadata pairs in hard-tail order.
type dirNode struct {
	pairs []*mdir
}

// Format writes an empty filesystem (the root/superblock pair at blocks 0
// and 1) over the whole device.
func Format(dev flash.Device) error {
	n := dev.Size() / BlockSize
	if n < 2 {
		return fmt.Errorf("littlefs: device of %d bytes is too small", dev.Size())
	}
	sb := make([]byte, 24)
	for i, v := range []uint32{diskVersion, BlockSize, uint32(n), nameMax, fileMax, attrMax} {
		binary.LittleEndian.PutUint32(sb[4*i:], v)
	}
	root := &mdir{
		blocks:  [2]uint32{1, 0}, // commitPair writes blocks[1] = 0
		rev:     0,
		tail:    [2]uint32{null, null},
		entries: []*entry{{name: magic, typ: typeSuperblock, sbData: sb}},
	}
	f := &FS{dev: dev, blockCount: uint32(n)}
	if err := dev.Erase(BlockSize, BlockSize); err != nil {
		return err
	}
	return f.commitPair(root)
}

// Mount reads the filesystem on dev.
func Mount(dev flash.Device) (*FS, error) {
	f := &FS{dev: dev, blockCount: uint32(dev.Size() / BlockSize)}
	root, err := f.fetchPair(0, 1)
	if err != nil {
		return nil, err
	}
	if len(root.entries) == 0 || root.entries[0].typ != typeSuperblock || root.entries[0].name != magic {
		return nil, fmt.Errorf("%w: no littlefs superblock", ErrCorrupt)
	}
	sb := root.entries[0].sbData
	if len(sb) < 12 {
		return nil, fmt.Errorf("%w: short superblock", ErrCorrupt)
	}
	if v := le32(sb); v>>16 != 2 {
		return nil, fmt.Errorf("%w: unsupported littlefs version %d.%d", ErrCorrupt, v>>16, v&0xFFFF)
	}
	if bs := le32(sb[4:]); bs != BlockSize {
		return nil, fmt.Errorf("%w: block size %d, want %d", ErrCorrupt, bs, BlockSize)
	}
	if bc := le32(sb[8:]); bc != f.blockCount {
		return nil, fmt.Errorf("%w: block count %d, partition has %d", ErrCorrupt, bc, f.blockCount)
	}
	f.used = make([]bool, f.blockCount)
	// Walk the threaded list of every metadata pair.
	byPair := map[[2]uint32]*mdir{}
	seen := map[uint32]bool{}
	for m := root; ; {
		if seen[m.blocks[0]] || seen[m.blocks[1]] {
			return nil, fmt.Errorf("%w: metadata list has a cycle", ErrCorrupt)
		}
		seen[m.blocks[0]], seen[m.blocks[1]] = true, true
		f.chain = append(f.chain, m)
		byPair[sortedPair(m.blocks)] = m
		f.used[m.blocks[0]], f.used[m.blocks[1]] = true, true
		if !m.hasTail() {
			break
		}
		next, err := f.fetchPair(m.tail[0], m.tail[1])
		if err != nil {
			return nil, err
		}
		m = next
	}
	// Build directories: a directory is its first pair plus hard tails.
	dirOf := func(first *mdir) *dirNode {
		d := &dirNode{pairs: []*mdir{first}}
		for m := first; m.hard && m.hasTail(); {
			m = byPair[sortedPair(m.tail)]
			if m == nil {
				break
			}
			d.pairs = append(d.pairs, m)
		}
		return d
	}
	f.root = dirOf(root)
	if err := f.applyPendingMove(); err != nil {
		return nil, err
	}
	// Mark file blocks.
	for _, m := range f.chain {
		for _, e := range m.entries {
			if e.typ == typeReg && e.ctz {
				blocks, err := f.ctzList(e.head, int(e.size))
				if err != nil {
					return nil, err
				}
				for _, b := range blocks {
					f.used[b] = true
				}
			}
		}
	}
	f.mounted = true
	return f, nil
}

func sortedPair(p [2]uint32) [2]uint32 {
	if p[0] > p[1] {
		return [2]uint32{p[1], p[0]}
	}
	return p
}

// applyPendingMove finishes a cross-directory move interrupted by a power
// cut (global move state): the source entry is deleted.
func (f *FS) applyPendingMove() error {
	var g [12]byte
	for _, m := range f.chain {
		for i := range g {
			g[i] ^= m.gdelta[i]
		}
	}
	t := tag(binary.LittleEndian.Uint32(g[:]))
	if t.typ3() != typeDelete {
		return nil
	}
	pair := [2]uint32{le32(g[4:]), le32(g[8:])}
	for _, m := range f.chain {
		if sortedPair(m.blocks) == sortedPair(pair) && int(t.id()) < len(m.entries) {
			m.entries = append(m.entries[:t.id()], m.entries[t.id()+1:]...)
			for i := range g {
				m.gdelta[i] ^= g[i] // cancel the move state
			}
			return f.commitPair(m)
		}
	}
	return nil
}

// ctzList returns the blocks of a CTZ file in order.
func (f *FS) ctzList(head uint32, size int) ([]uint32, error) {
	n := ctzBlocks(size)
	blocks := make([]uint32, n)
	var ptr [4]byte
	b := head
	for i := n - 1; i >= 0; i-- {
		if b >= f.blockCount {
			return nil, fmt.Errorf("%w: file block %#x out of range", ErrCorrupt, b)
		}
		blocks[i] = b
		if i > 0 {
			if _, err := f.dev.ReadAt(ptr[:], int64(b)*BlockSize); err != nil {
				return nil, err
			}
			b = le32(ptr[:])
		}
	}
	return blocks, nil
}

// Unmount releases the filesystem; it must not be used afterwards.
func (f *FS) Unmount() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounted = false
	return nil
}

// Usage returns the filesystem size and the bytes in use, block-granular as
// littlefs reports them.
func (f *FS) Usage() (total, used int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, u := range f.used {
		if u {
			n++
		}
	}
	return int64(f.blockCount) * BlockSize, int64(n) * BlockSize
}

// alloc returns a free block and marks it used.
func (f *FS) alloc() (uint32, error) {
	for i := uint32(0); i < f.blockCount; i++ {
		b := (f.cursor + i) % f.blockCount
		if !f.used[b] {
			f.used[b] = true
			f.cursor = b + 1
			return b, nil
		}
	}
	return 0, ErrNoSpace
}

// --- path resolution ---

func clean(name string) string {
	name = path.Clean("/" + name)
	return strings.TrimPrefix(name, "/")
}

// lookup finds an entry by path: the pair holding it and its id.
func (f *FS) lookup(name string) (*mdir, int, error) {
	name = clean(name)
	if name == "" {
		return nil, -1, nil // root
	}
	d := f.root
	parts := strings.Split(name, "/")
	for i, p := range parts {
		m, id := d.find(p)
		if m == nil {
			return nil, 0, os.ErrNotExist
		}
		if i == len(parts)-1 {
			return m, id, nil
		}
		e := m.entries[id]
		if e.typ != typeDir {
			return nil, 0, os.ErrNotExist
		}
		if d = f.dirAt(e.child); d == nil {
			return nil, 0, fmt.Errorf("%w: directory %q points to a missing pair", ErrCorrupt, p)
		}
	}
	return nil, 0, os.ErrNotExist
}

func (d *dirNode) find(name string) (*mdir, int) {
	for _, m := range d.pairs {
		for id, e := range m.entries {
			if e.typ != typeSuperblock && e.name == name {
				return m, id
			}
		}
	}
	return nil, 0
}

// dirAt returns the directory whose first pair is p.
func (f *FS) dirAt(p [2]uint32) *dirNode {
	for _, m := range f.chain {
		if sortedPair(m.blocks) == sortedPair(p) {
			d := &dirNode{pairs: []*mdir{m}}
			for cur := m; cur.hard && cur.hasTail(); {
				var next *mdir
				for _, n := range f.chain {
					if sortedPair(n.blocks) == sortedPair(cur.tail) {
						next = n
					}
				}
				if next == nil {
					break
				}
				d.pairs = append(d.pairs, next)
				cur = next
			}
			return d
		}
	}
	return nil
}

// dirFor returns the directory that holds name's parent.
func (f *FS) parentDir(name string) (*dirNode, string, error) {
	name = clean(name)
	if name == "" {
		return nil, "", os.ErrInvalid
	}
	dir, base := path.Split(name)
	if len(base) > nameMax {
		return nil, "", fmt.Errorf("littlefs: name %q too long", base)
	}
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		return f.root, base, nil
	}
	m, id, err := f.lookup(dir)
	if err != nil {
		return nil, "", err
	}
	e := m.entries[id]
	if e.typ != typeDir {
		return nil, "", os.ErrInvalid
	}
	d := f.dirAt(e.child)
	if d == nil {
		return nil, "", ErrCorrupt
	}
	return d, base, nil
}

// nameLess is littlefs's directory order: bytes, then shorter first.
func nameLess(a, b string) bool { return a < b }

// insert adds e to directory d, keeping names sorted within the pair, and
// commits. Files that no longer fit inline are moved out to CTZ lists.
func (f *FS) insert(d *dirNode, e *entry) error {
	m := d.pairs[len(d.pairs)-1]
	for _, p := range d.pairs {
		if len(p.entries) > 0 && nameLess(e.name, p.entries[len(p.entries)-1].name) {
			m = p
			break
		}
	}
	pos := sort.Search(len(m.entries), func(i int) bool {
		return m.entries[i].typ != typeSuperblock && !nameLess(m.entries[i].name, e.name)
	})
	old := m.entries
	m.entries = append(append(append([]*entry(nil), old[:pos]...), e), old[pos:]...)
	if err := f.commitFitting(m); err != nil {
		m.entries = old
		return err
	}
	return nil
}

// commitFitting commits m, moving the largest inline files out of the
// metadata into CTZ lists while it does not fit in a block.
func (f *FS) commitFitting(m *mdir) error {
	for {
		err := f.commitPair(m)
		if !errors.Is(err, errNoSpaceMeta) {
			return err
		}
		var big *entry
		for _, e := range m.entries {
			if e.typ == typeReg && !e.ctz && len(e.inline) > 0 && (big == nil || len(e.inline) > len(big.inline)) {
				big = e
			}
		}
		if big == nil {
			return fmt.Errorf("%w: too many entries in one directory", ErrNoSpace)
		}
		blocks, err := f.writeCTZ(nil, big.inline, 0)
		if err != nil {
			return err
		}
		big.ctz, big.head, big.size, big.inline = true, blocks[len(blocks)-1], uint32(len(big.inline)), nil
	}
}

// writeCTZ writes data as a CTZ list reusing keep (the unchanged leading
// blocks of the previous version) and returns the new list of blocks.
func (f *FS) writeCTZ(keep []uint32, data []byte, from int) ([]uint32, error) {
	blocks := append([]uint32(nil), keep...)
	n := ctzBlocks(len(data))
	buf := make([]byte, BlockSize)
	pos := 0
	for i := 0; i < n; i++ {
		c := ctzCap(i)
		if i < len(keep) {
			pos += c
			continue
		}
		b, err := f.alloc()
		if err != nil {
			for _, nb := range blocks[len(keep):] {
				f.used[nb] = false
			}
			return nil, err
		}
		hdr := BlockSize - c
		for k := 0; k*4 < hdr; k++ {
			binary.LittleEndian.PutUint32(buf[4*k:], blocks[i-(1<<k)])
		}
		m := copy(buf[hdr:], data[pos:min(pos+c, len(data))])
		if err := f.dev.Erase(int64(b)*BlockSize, BlockSize); err != nil {
			return nil, err
		}
		if _, err := f.dev.WriteAt(buf[:roundUp(hdr+m)], int64(b)*BlockSize); err != nil {
			return nil, err
		}
		blocks = append(blocks, b)
		pos += c
	}
	_ = from
	return blocks, nil
}

func roundUp(n int) int { return min((n+progSize-1)/progSize*progSize, BlockSize) }

// readAll returns the contents of a file entry.
func (f *FS) readAll(e *entry) ([]byte, []uint32, error) {
	if !e.ctz {
		return append([]byte(nil), e.inline...), nil, nil
	}
	blocks, err := f.ctzList(e.head, int(e.size))
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, 0, e.size)
	buf := make([]byte, BlockSize)
	for i, b := range blocks {
		if _, err := f.dev.ReadAt(buf, int64(b)*BlockSize); err != nil {
			return nil, nil, err
		}
		hdr := BlockSize - ctzCap(i)
		out = append(out, buf[hdr:min(BlockSize, hdr+int(e.size)-len(out))]...)
	}
	return out, blocks, nil
}

// storeFile commits new contents for the file at (m, id). dirtyFrom is the
// first offset that changed since the stored version.
func (f *FS) storeFile(m *mdir, id int, data []byte, dirtyFrom int) error {
	e := m.entries[id]
	var oldBlocks []uint32
	if e.ctz {
		var err error
		if oldBlocks, err = f.ctzList(e.head, int(e.size)); err != nil {
			return err
		}
	}
	ne := *e
	var newBlocks []uint32
	if len(data) <= inlineMax {
		ne.ctz, ne.inline, ne.head, ne.size = false, append([]byte(nil), data...), 0, 0
	} else {
		keepN := 0
		if e.ctz && dirtyFrom > 0 {
			keepN, _ = ctzOffset(dirtyFrom)
			keepN = min(keepN, len(oldBlocks)-1, ctzBlocks(len(data))-1)
			keepN = max(keepN, 0)
			// The last old block may be partly filled: never reuse it.
		}
		var err error
		if newBlocks, err = f.writeCTZ(oldBlocks[:keepN], data, dirtyFrom); err != nil {
			return err
		}
		ne.ctz, ne.inline, ne.head, ne.size = true, nil, newBlocks[len(newBlocks)-1], uint32(len(data))
	}
	m.entries[id] = &ne
	if err := f.commitFitting(m); err != nil {
		m.entries[id] = e
		for _, b := range newBlocks {
			if !contains(oldBlocks, b) {
				f.used[b] = false
			}
		}
		return err
	}
	for _, b := range oldBlocks {
		if !contains(newBlocks, b) {
			f.used[b] = false
		}
	}
	return nil
}

func contains(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// remove deletes the entry at (m, id), freeing its blocks.
func (f *FS) remove(m *mdir, id int) error {
	e := m.entries[id]
	var blocks []uint32
	switch {
	case e.typ == typeDir:
		d := f.dirAt(e.child)
		if d != nil {
			for _, p := range d.pairs {
				if len(p.entries) > 0 {
					return ErrNotEmpty
				}
			}
		}
		if err := f.unlinkDir(d); err != nil {
			return err
		}
	case e.ctz:
		var err error
		if blocks, err = f.ctzList(e.head, int(e.size)); err != nil {
			return err
		}
	}
	old := m.entries
	m.entries = append(append([]*entry(nil), old[:id]...), old[id+1:]...)
	if err := f.commitPair(m); err != nil {
		m.entries = old
		return err
	}
	for _, b := range blocks {
		f.used[b] = false
	}
	return nil
}

// unlinkDir removes a directory's pairs from the threaded metadata list.
func (f *FS) unlinkDir(d *dirNode) error {
	if d == nil {
		return nil
	}
	first := d.pairs[0]
	last := d.pairs[len(d.pairs)-1]
	for i, m := range f.chain {
		if m == first && i > 0 {
			pred := f.chain[i-1]
			oldTail, oldHard := pred.tail, pred.hard
			pred.tail, pred.hard = last.tail, false
			if err := f.commitPair(pred); err != nil {
				pred.tail, pred.hard = oldTail, oldHard
				return err
			}
			f.chain = append(f.chain[:i], f.chain[i+len(d.pairs):]...)
			for _, p := range d.pairs {
				f.used[p.blocks[0]], f.used[p.blocks[1]] = false, false
			}
			return nil
		}
	}
	return nil
}

// mkdir creates an empty directory: a new pair appended to the metadata
// list, then its entry in the parent.
func (f *FS) mkdir(parent *dirNode, name string) error {
	a, err := f.alloc()
	if err != nil {
		return err
	}
	b, err := f.alloc()
	if err != nil {
		f.used[a] = false
		return err
	}
	nd := &mdir{blocks: [2]uint32{b, a}, tail: [2]uint32{null, null}}
	err = f.dev.Erase(int64(b)*BlockSize, BlockSize)
	if err == nil {
		err = f.commitPair(nd) // was lost to a shadowed err (staticcheck SA4006)
	}
	if err != nil {
		f.used[a], f.used[b] = false, false
		return err
	}
	last := f.chain[len(f.chain)-1]
	oldTail, oldHard := last.tail, last.hard
	last.tail, last.hard = nd.blocks, false
	if err := f.commitPair(last); err != nil {
		last.tail, last.hard = oldTail, oldHard
		f.used[a], f.used[b] = false, false
		return err
	}
	f.chain = append(f.chain, nd)
	return f.insert(parent, &entry{name: name, typ: typeDir, child: nd.blocks})
}

var _ = io.EOF
var _ iofs.FileMode
