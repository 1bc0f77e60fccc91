package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/mosemu/mosemu/emu/flash"
)

// Errors with the meaning the firmware's VFS gives them.
var (
	ErrNoSpace  = errors.New("littlefs: no space left on device")
	ErrNotEmpty = errors.New("littlefs: directory not empty")
)

// FS is a mounted littlefs. It is safe for concurrent use.
//
// The metadata pairs are kept in memory in threaded-list order (chain), as
// the last valid commit of each says. Every change rewrites (compacts) the
// pairs it touches into their other block, so a power cut leaves each pair
// either old or new; multi-pair operations use the global state (gstate) as
// the reference does: a pending move or orphan flag is committed with the
// first pair and cleared with the last.
type FS struct {
	mu         sync.Mutex
	dev        flash.Device
	blockCount uint32
	chain      []*mdir // every metadata pair, in tail order ({0,1} first)
	root       *mdir   // first pair of the root directory (holds the superblock)
	gdisk      gstate  // XOR of every pair's gstate: the state on flash
	gwant      gstate  // the state the next commit must leave on flash
	moveFix    *mdir   // pair whose entry a pending move hides (fixed on first write)
	orphans    bool    // the on-flash state says orphans may exist
	used       []bool  // block in use by the committed state or an open write
	cursor     uint32  // allocation cursor
	mounted    bool
	broken     error  // set when the in-memory state could not be reloaded
	cycles     uint32 // block_cycles: compactions of a pair before it moves
	moving     *entry // source entry of a rename whose move is pending in gwant
}

// gstate is littlefs's global state: a tag (move type and id, orphan bit)
// and the pair of a pending move.
type gstate [12]byte

func (g gstate) xor(o gstate) gstate {
	for i := range g {
		g[i] ^= o[i]
	}
	return g
}

func (g gstate) tag() tag            { return tag(binary.LittleEndian.Uint32(g[:])) }
func (g gstate) hasMove() bool       { return g.tag().typ1() != 0 }
func (g gstate) hasOrphans() bool    { return g.tag()&0x80000000 != 0 }
func (g gstate) movePair() [2]uint32 { return [2]uint32{le32(g[4:]), le32(g[8:])} }

// withMove returns g with its move part replaced: id in pair, or none.
func (g gstate) withMove(id uint32, pair [2]uint32, set bool) gstate {
	t := uint32(g.tag()) & 0x80000000
	var p [2]uint32
	if set {
		t |= uint32(mkTag(typeDelete, id, 0))
		p = pair
	}
	binary.LittleEndian.PutUint32(g[:], t)
	binary.LittleEndian.PutUint32(g[4:], p[0])
	binary.LittleEndian.PutUint32(g[8:], p[1])
	return g
}

// withOrphans returns g with its orphan bit set or cleared.
func (g gstate) withOrphans(on bool) gstate {
	t := uint32(g.tag()) &^ 0x80000000
	if on {
		t |= 0x80000000
	}
	binary.LittleEndian.PutUint32(g[:], t)
	return g
}

// dirNode is a directory: its metadata pairs in hard-tail order.
type dirNode struct {
	pairs []*mdir
}

// Format writes an empty filesystem (the root/superblock pair at blocks 0
// and 1) over the whole device, as lfs_format does: disk version 2.0.
func Format(dev flash.Device) error {
	n := dev.Size() / BlockSize
	if n < 2 {
		return fmt.Errorf("littlefs: device of %d bytes is too small", dev.Size())
	}
	f := &FS{dev: dev, blockCount: uint32(n), used: make([]bool, n), cycles: blockCycles}
	f.used[0], f.used[1] = true, true
	sb := make([]byte, 24)
	for i, v := range []uint32{diskVersion, BlockSize, uint32(n), nameMax, fileMax, attrMax} {
		binary.LittleEndian.PutUint32(sb[4*i:], v)
	}
	// As lfs_format: the root pair is {1, 0} with block 1's revision (made
	// even), committed twice: to block 0, then, forced, to block 1.
	var rev [4]byte
	if _, err := dev.ReadAt(rev[:], BlockSize); err != nil {
		return err
	}
	r := le32(rev[:])
	root := &mdir{
		blocks:  [2]uint32{1, 0},
		rev:     r + r&1,
		tail:    [2]uint32{null, null},
		entries: []*entry{{name: magic, typ: typeSuperblock, sbData: sb}},
	}
	f.chain, f.root = []*mdir{root}, root
	if err := f.commit(root); err != nil {
		return err
	}
	return f.commit(root)
}

// Mount reads the filesystem on dev. It does not write: a pending move or
// orphan left by a power cut is hidden and repaired by the first change, as
// littlefs does.
func Mount(dev flash.Device) (*FS, error) {
	f := &FS{dev: dev, blockCount: uint32(dev.Size() / BlockSize), cycles: blockCycles}
	if err := f.load(); err != nil {
		return nil, err
	}
	f.mounted = true
	return f, nil
}

// load (re)reads the whole filesystem state from flash.
func (f *FS) load() error {
	if f.blockCount < 2 {
		return fmt.Errorf("%w: device too small", ErrCorrupt)
	}
	// A directory pair relocated (wear levelling) by littlefs, with a power
	// cut before its predecessor's tail followed: the parent points at the
	// new pair, the list at the old one. Walk the list through the new one
	// (and its tail); the first change re-links it (deorphan). Its share of
	// the global state counts, not the old pair's: the parent's commit took
	// that over (littlefs's own mount sums the old one and is off by it
	// until the re-link).
	subst := map[[2]uint32][2]uint32{}
	for pass := 0; ; pass++ {
		if err := f.walk(subst); err != nil {
			return err
		}
		i, child := f.relocatedChild()
		if i < 0 {
			break
		}
		if pass > int(f.blockCount) {
			return fmt.Errorf("%w: relocated pairs do not resolve", ErrCorrupt)
		}
		subst[sortedPair(f.chain[i].blocks)] = child
	}
	f.orphans = len(subst) > 0
	f.gwant = f.gdisk
	if f.gdisk.hasOrphans() {
		f.orphans = true
	}
	if f.orphans {
		f.gwant = f.gwant.withOrphans(true)
	}
	if f.gdisk.hasMove() {
		// The move's source entry is gone as soon as its destination
		// committed: hide it now, delete it for good on the first change.
		id := f.gdisk.tag().id()
		if m := f.pairAt(f.gdisk.movePair()); m != nil && int(id) < len(m.entries) {
			m.entries = append(m.entries[:id:id], m.entries[id+1:]...)
			f.moveFix = m
		}
		f.gwant = f.gwant.withMove(0, [2]uint32{}, false)
	}
	// Each directory pair is the child of one entry at most, never the
	// root: otherwise walking the tree would never end.
	children := map[[2]uint32]bool{}
	for _, m := range f.chain {
		for _, e := range m.entries {
			if e.typ != typeDir {
				continue
			}
			c := sortedPair(e.child)
			if children[c] || c == sortedPair(f.root.blocks) || c == [2]uint32{0, 1} {
				return fmt.Errorf("%w: directory %q makes a cycle", ErrCorrupt, e.name)
			}
			children[c] = true
		}
	}
	for _, m := range f.chain {
		for _, e := range m.entries {
			if e.typ == typeReg && e.ctz && e.size > 0 {
				blocks, err := f.ctzList(e.head, int(e.size))
				if err != nil {
					return err
				}
				for _, b := range blocks {
					f.used[b] = true
				}
			}
		}
	}
	return nil
}

// walk reads the threaded list of metadata pairs from {0,1}, reading
// subst[p] in place of pair p.
func (f *FS) walk(subst map[[2]uint32][2]uint32) error {
	f.chain, f.root, f.moveFix, f.moving = nil, nil, nil, nil
	f.gdisk = gstate{}
	f.used = make([]bool, f.blockCount)
	seen := map[uint32]bool{}
	for p := [2]uint32{0, 1}; ; {
		if n, ok := subst[sortedPair(p)]; ok {
			// The old pair stays allocated until nothing points at it.
			f.used[p[0]], f.used[p[1]] = true, true
			p = n
		}
		if seen[p[0]] || seen[p[1]] || p[0] == p[1] {
			return fmt.Errorf("%w: metadata list has a cycle at {%#x, %#x}", ErrCorrupt, p[0], p[1])
		}
		seen[p[0]], seen[p[1]] = true, true
		m, err := f.fetchPair(p[0], p[1])
		if err != nil {
			return err
		}
		f.chain = append(f.chain, m)
		f.used[p[0]], f.used[p[1]] = true, true
		if len(m.entries) > 0 && m.entries[0].typ == typeSuperblock && m.entries[0].name == magic {
			if err := checkSuperblock(m.entries[0].sbData); err != nil {
				return err
			}
			f.root = m
		}
		f.gdisk = f.gdisk.xor(m.gstate)
		if !m.hasTail() {
			break
		}
		p = m.tail
	}
	if f.root == nil {
		return fmt.Errorf("%w: no littlefs superblock", ErrCorrupt)
	}
	return nil
}

// relocatedChild finds a directory entry whose pair is not listed but
// shares a block with a listed one: the index of that one, and the pair.
func (f *FS) relocatedChild() (int, [2]uint32) {
	for _, m := range f.chain {
		for _, e := range m.entries {
			if e.typ != typeDir || f.exactPair(e.child) {
				continue
			}
			for k, c := range f.chain {
				if overlap(c.blocks, e.child) {
					return k, e.child
				}
			}
		}
	}
	return -1, [2]uint32{}
}

func (f *FS) exactPair(p [2]uint32) bool {
	for _, m := range f.chain {
		if sortedPair(m.blocks) == sortedPair(p) {
			return true
		}
	}
	return false
}

// checkSuperblock accepts what littlefs v2.1-v2.4 (disk version 2.0) accepts.
func checkSuperblock(sb []byte) error {
	if len(sb) < 24 {
		return fmt.Errorf("%w: short superblock", ErrCorrupt)
	}
	if v := le32(sb); v>>16 != 2 || v&0xFFFF > 0 {
		return fmt.Errorf("%w: unsupported littlefs disk version %d.%d", ErrCorrupt, v>>16, v&0xFFFF)
	}
	if bs := le32(sb[4:]); bs != BlockSize {
		return fmt.Errorf("%w: block size %d, want %d", ErrCorrupt, bs, BlockSize)
	}
	if n := le32(sb[12:]); n > nameMax {
		return fmt.Errorf("%w: name_max %d > %d", ErrCorrupt, n, nameMax)
	}
	if n := le32(sb[16:]); n > fileMax {
		return fmt.Errorf("%w: file_max %d > %d", ErrCorrupt, n, fileMax)
	}
	if n := le32(sb[20:]); n > attrMax {
		return fmt.Errorf("%w: attr_max %d > %d", ErrCorrupt, n, attrMax)
	}
	return nil
}

// reload re-reads flash after a failed change so that memory matches what
// was committed. If even that fails the filesystem refuses further use.
func (f *FS) reload() {
	if err := f.load(); err != nil {
		f.broken = err
	}
}

// writable is called at the start of every change: it refuses a broken
// filesystem and finishes an interrupted move or directory operation.
func (f *FS) writable() error {
	if !f.mounted {
		return os.ErrClosed
	}
	if f.broken != nil {
		return f.broken
	}
	if m := f.moveFix; m != nil {
		f.moveFix = nil
		if err := f.commitOrDrop(m); err != nil {
			f.reload()
			return err
		}
	}
	if f.orphans {
		if err := f.deorphan(); err != nil {
			f.reload()
			return err
		}
		f.orphans = false
		f.gwant = f.gwant.withOrphans(false)
	}
	return nil
}

// deorphan drops directories that are in the metadata list but in no
// parent, and re-links those whose parent points elsewhere (lfs_fs_deorphan),
// until none is left.
func (f *FS) deorphan() error {
	for n := 0; n <= len(f.chain)+1; n++ {
		fixed, err := f.deorphanOnce()
		if err != nil || !fixed {
			return err
		}
	}
	return fmt.Errorf("%w: orphans do not resolve", ErrCorrupt)
}

// deorphanOnce makes one repair and reports whether it made one.
func (f *FS) deorphanOnce() (bool, error) {
	for i := 1; i < len(f.chain); i++ {
		pred, m := f.chain[i-1], f.chain[i]
		if pred.hard {
			if sortedPair(pred.tail) != sortedPair(m.blocks) {
				// A relocated continuation pair: re-link it.
				pred.tail = m.blocks
				if err := f.commit(pred); err != nil {
					return false, err
				}
				f.reload()
				return true, f.broken
			}
			continue
		}
		pm, id := f.parentOf(m)
		if pm == nil {
			if err := f.drop(pred, m); err != nil {
				return false, err
			}
			return true, nil
		}
		if child := pm.entries[id].child; sortedPair(pred.tail) != sortedPair(child) {
			// Half-orphan: the parent knows a relocated copy (see load).
			pred.tail = child
			if err := f.commit(pred); err != nil {
				return false, err
			}
			f.reload()
			return true, f.broken
		}
	}
	return false, nil
}

// parentOf finds the directory entry pointing at pair m.
func (f *FS) parentOf(m *mdir) (*mdir, int) {
	for _, p := range f.chain {
		for id, e := range p.entries {
			if e.typ == typeDir && overlap(e.child, m.blocks) {
				return p, id
			}
		}
	}
	return nil, 0
}

func sortedPair(p [2]uint32) [2]uint32 {
	if p[0] > p[1] {
		return [2]uint32{p[1], p[0]}
	}
	return p
}

// overlap reports whether two pairs share a block: littlefs's notion of
// the same pair (lfs_pair_cmp), which survives relocating one block.
func overlap(a, b [2]uint32) bool {
	return a[0] == b[0] || a[0] == b[1] || a[1] == b[0] || a[1] == b[1]
}

// pairAt returns the listed pair p is, or shares a block with.
func (f *FS) pairAt(p [2]uint32) *mdir {
	for _, m := range f.chain {
		if sortedPair(m.blocks) == sortedPair(p) {
			return m
		}
	}
	for _, m := range f.chain {
		if overlap(m.blocks, p) {
			return m
		}
	}
	return nil
}

func (f *FS) chainIndex(m *mdir) int {
	for i, x := range f.chain {
		if x == m {
			return i
		}
	}
	return -1
}

// ctzList returns the blocks of a CTZ file in order.
func (f *FS) ctzList(head uint32, size int) ([]uint32, error) {
	n := ctzBlocks(size)
	if n > int(f.blockCount) {
		return nil, fmt.Errorf("%w: file of %d bytes larger than the filesystem", ErrCorrupt, size)
	}
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
	return int64(f.blockCount) * BlockSize, int64(f.usedBlocks()) * BlockSize
}

func (f *FS) usedBlocks() int {
	n := 0
	for _, u := range f.used {
		if u {
			n++
		}
	}
	return n
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

// rootDir is the root directory: the superblock pair and its hard tails.
func (f *FS) rootDir() *dirNode { return f.dirFrom(f.root) }

// dirFrom returns the directory whose first pair is m.
func (f *FS) dirFrom(m *mdir) *dirNode {
	d := &dirNode{pairs: []*mdir{m}}
	for i := f.chainIndex(m); i >= 0 && i+1 < len(f.chain) && f.chain[i].hard; i++ {
		d.pairs = append(d.pairs, f.chain[i+1])
	}
	return d
}

// dirAt returns the directory whose first pair is p.
func (f *FS) dirAt(p [2]uint32) *dirNode {
	m := f.pairAt(p)
	if m == nil {
		return nil
	}
	return f.dirFrom(m)
}

// lookup finds an entry by path: the pair holding it and its id.
func (f *FS) lookup(name string) (*mdir, int, error) {
	name = clean(name)
	if name == "" {
		return nil, -1, nil // root
	}
	d := f.rootDir()
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
			return nil, 0, syscall.ENOTDIR
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

// slot returns where littlefs puts a new entry called name in d: the first
// pair holding a greater name (before it), else the end of the last pair.
func (d *dirNode) slot(name string) (*mdir, int) {
	for i, m := range d.pairs {
		for id, e := range m.entries {
			if e.typ != typeSuperblock && e.name > name {
				return m, id
			}
		}
		if i == len(d.pairs)-1 {
			return m, len(m.entries)
		}
	}
	return nil, 0
}

// parentDir returns the directory that holds name, and name's last element.
func (f *FS) parentDir(name string) (*dirNode, string, error) {
	name = clean(name)
	if name == "" {
		return nil, "", os.ErrInvalid
	}
	dir, base := path.Split(name)
	if len(base) > nameMax {
		return nil, "", syscall.ENAMETOOLONG
	}
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		return f.rootDir(), base, nil
	}
	m, id, err := f.lookup(dir)
	if err != nil {
		return nil, "", err
	}
	e := m.entries[id]
	if e.typ != typeDir {
		return nil, "", syscall.ENOTDIR
	}
	d := f.dirAt(e.child)
	if d == nil {
		return nil, "", ErrCorrupt
	}
	return d, base, nil
}

// --- changes ---

// insert adds e to directory d in littlefs's order and commits.
func (f *FS) insert(d *dirNode, e *entry) error {
	m, pos := d.slot(e.name)
	m.entries = insertAt(m.entries, pos, e)
	if err := f.commit(m); err != nil {
		f.reload()
		return err
	}
	return nil
}

func insertAt(s []*entry, pos int, e *entry) []*entry {
	out := make([]*entry, 0, len(s)+1)
	out = append(append(append(out, s[:pos]...), e), s[pos:]...)
	return out
}

func removeAt(s []*entry, pos int) []*entry {
	out := make([]*entry, 0, len(s))
	return append(append(out, s[:pos]...), s[pos+1:]...)
}

// writeCTZ writes data as a CTZ list reusing keep (the unchanged leading
// blocks of the previous version) and returns the new list of blocks.
func (f *FS) writeCTZ(keep []uint32, data []byte) ([]uint32, error) {
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
	return blocks, nil
}

func roundUp(n int) int { return min((n+progSize-1)/progSize*progSize, BlockSize) }

// readAll returns the contents of a file entry.
func (f *FS) readAll(e *entry) ([]byte, []uint32, error) {
	if !e.ctz {
		return append([]byte(nil), e.inline...), nil, nil
	}
	if e.size == 0 {
		return nil, nil, nil
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
	if e.ctz && e.size > 0 {
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
			// The last old block may be partly filled: never reuse it.
			keepN = max(min(keepN, len(oldBlocks)-1, ctzBlocks(len(data))-1), 0)
		}
		var err error
		if newBlocks, err = f.writeCTZ(oldBlocks[:keepN], data); err != nil {
			return err
		}
		ne.ctz, ne.inline, ne.head, ne.size = true, nil, newBlocks[len(newBlocks)-1], uint32(len(data))
	}
	m.entries[id] = &ne
	if err := f.commit(m); err != nil {
		f.reload()
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

// fileBlocks lists the data blocks of a file entry (none for inline files).
func (f *FS) fileBlocks(e *entry) []uint32 {
	if e.typ != typeReg || !e.ctz || e.size == 0 {
		return nil
	}
	b, _ := f.ctzList(e.head, int(e.size))
	return b
}

// emptyDir reports whether the directory entry e has no entries (its first
// pair is empty and not split), and returns its first pair.
func (f *FS) emptyDir(e *entry) (*mdir, error) {
	c := f.pairAt(e.child)
	if c == nil {
		return nil, fmt.Errorf("%w: directory points to a missing pair", ErrCorrupt)
	}
	if len(c.entries) > 0 || c.hard {
		return c, ErrNotEmpty
	}
	return c, nil
}

// remove deletes the entry at (m, id), freeing its blocks (lfs_remove).
func (f *FS) remove(m *mdir, id int) error {
	e := m.entries[id]
	var child *mdir
	if e.typ == typeDir {
		var err error
		if child, err = f.emptyDir(e); err != nil {
			return err
		}
		f.gwant = f.gwant.withOrphans(true)
	}
	blocks := f.fileBlocks(e)
	m.entries = removeAt(m.entries, id)
	err := f.commitOrDrop(m)
	if err == nil && child != nil {
		f.gwant = f.gwant.withOrphans(false)
		err = f.unlinkPair(child)
	}
	if err != nil {
		f.reload()
		return err
	}
	f.free(blocks)
	return nil
}

// unlinkPair removes pair m from the metadata list: its predecessor takes
// its tail and its share of the global state (lfs_dir_drop).
func (f *FS) unlinkPair(m *mdir) error {
	i := f.chainIndex(m)
	if i <= 0 {
		return fmt.Errorf("%w: pair {%#x, %#x} has no predecessor", ErrCorrupt, m.blocks[0], m.blocks[1])
	}
	return f.drop(f.chain[i-1], m)
}

// drop removes pair m, which follows pred in the list, with one commit of
// pred, which steals m's tail and gstate; m's blocks become free.
func (f *FS) drop(pred, m *mdir) error {
	i := f.chainIndex(m)
	pred.gstate = pred.gstate.xor(m.gstate)
	pred.tail, pred.hard = m.tail, m.hard
	f.chain = append(f.chain[:i:i], f.chain[i+1:]...)
	if err := f.commit(pred); err != nil {
		return err
	}
	f.used[m.blocks[0]], f.used[m.blocks[1]] = false, false
	return nil
}

// commitOrDrop commits m, or drops it from its directory when it has
// become empty and is not the directory's first pair (lfs_dir_commit).
func (f *FS) commitOrDrop(m *mdir) error {
	f.dropMoving(m)
	if i := f.chainIndex(m); len(m.entries) == 0 && i > 0 && f.chain[i-1].hard {
		return f.drop(f.chain[i-1], m)
	}
	return f.commit(m)
}

// dropMoving deletes the source entry of a pending move from m, if m holds
// it, and clears the move: both go to flash with m's next commit.
func (f *FS) dropMoving(m *mdir) {
	if f.moving == nil {
		return
	}
	for i, e := range m.entries {
		if e == f.moving {
			m.entries = removeAt(m.entries, i)
			f.moving = nil
			f.gwant = f.gwant.withMove(0, [2]uint32{}, false)
			return
		}
	}
}

// mkdir creates an empty directory as lfs_mkdir does: a new pair linked
// into the metadata list after the parent's last pair, then its entry.
func (f *FS) mkdir(parent *dirNode, name string) error {
	cwd, pos := parent.slot(name)
	pred := parent.pairs[len(parent.pairs)-1]
	nd, err := f.newPair()
	if err != nil {
		return err
	}
	nd.tail = pred.tail
	if err := f.commit(nd); err != nil {
		f.reload()
		return err
	}
	f.chain = insertPair(f.chain, f.chainIndex(pred)+1, nd)
	pred.tail, pred.hard = nd.blocks, false
	if cwd != pred {
		// The new pair is reachable before its parent knows it.
		f.gwant = f.gwant.withOrphans(true)
		if err := f.commit(pred); err != nil {
			f.reload()
			return err
		}
		f.gwant = f.gwant.withOrphans(false)
	}
	cwd.entries = insertAt(cwd.entries, pos, &entry{name: name, typ: typeDir, child: nd.blocks})
	if err := f.commit(cwd); err != nil {
		f.reload()
		return err
	}
	return nil
}

func insertPair(s []*mdir, pos int, m *mdir) []*mdir {
	out := make([]*mdir, 0, len(s)+1)
	return append(append(append(out, s[:pos]...), m), s[pos:]...)
}

// newPair allocates a metadata pair. Its revision continues from whatever
// the block it will not write first holds, as lfs_dir_alloc does, so a stale
// log there never wins.
func (f *FS) newPair() (*mdir, error) {
	a, err := f.alloc()
	if err != nil {
		return nil, err
	}
	b, err := f.alloc()
	if err != nil {
		f.used[a] = false
		return nil, err
	}
	var rev [4]byte
	if _, err := f.dev.ReadAt(rev[:], int64(b)*BlockSize); err != nil {
		return nil, err
	}
	r := le32(rev[:])
	r += r & 1
	return &mdir{blocks: [2]uint32{b, a}, rev: r, tail: [2]uint32{null, null}, fresh: true}, nil
}

// rename moves oldname to newname as lfs_rename does.
func (f *FS) rename(oldname, newname string) error {
	sm, sid, err := f.lookup(oldname)
	if err == nil && sm == nil {
		err = os.ErrInvalid // the root
	}
	if err != nil {
		return err
	}
	if clean(oldname) == clean(newname) {
		return nil
	}
	d, base, err := f.parentDir(newname)
	if err != nil {
		return err
	}
	src := sm.entries[sid]
	if src.typ == typeDir && strings.HasPrefix(clean(newname)+"/", clean(oldname)+"/") {
		return os.ErrInvalid // into itself
	}
	var (
		freed    []uint32
		replaced *mdir // the emptied directory a rename replaces
	)
	dm, did := d.find(base)
	if dm != nil {
		de := dm.entries[did]
		switch {
		case de.typ == typeDir && src.typ != typeDir:
			return syscall.EISDIR
		case de.typ != typeDir && src.typ == typeDir:
			return syscall.ENOTDIR
		case de.typ == typeDir:
			if replaced, err = f.emptyDir(de); err != nil {
				return err
			}
			f.gwant = f.gwant.withOrphans(true)
		}
		freed = f.fileBlocks(de)
	}
	ne := *src
	ne.name = base
	switch {
	case dm == sm:
		// One commit in the same pair: replace the destination.
		sm.entries[did] = &ne
		sm.entries = removeAt(sm.entries, sid)
		err = f.commit(sm)
	case dm == nil && func() bool { m, _ := d.slot(base); return m == sm }():
		// Same pair: base sorts within sm, before or after the source.
		sm.entries = removeAt(sm.entries, sid)
		pos := len(sm.entries)
		for i, e := range sm.entries {
			if e.typ != typeSuperblock && e.name > base {
				pos = i
				break
			}
		}
		sm.entries = insertAt(sm.entries, pos, &ne)
		err = f.commit(sm)
	default:
		// Across pairs: the destination commit carries the move in the
		// global state; the next commit of the source's pair (which may
		// come sooner, when relocations re-link it) deletes the entry and
		// clears it, as lfs_dir_commit does for a pending move.
		f.gwant = f.gwant.withMove(uint32(sid), sm.blocks, true)
		f.moving = src
		if dm != nil {
			dm.entries[did] = &ne
			err = f.commit(dm)
		} else {
			m, pos := d.slot(base)
			m.entries = insertAt(m.entries, pos, &ne)
			err = f.commit(m)
		}
		if err == nil && f.moving != nil {
			err = fmt.Errorf("%w: moved entry %q not found", ErrCorrupt, src.name)
			for _, p := range f.chain {
				if slices.Contains(p.entries, src) {
					err = f.commitOrDrop(p)
					break
				}
			}
		}
	}
	if err == nil && replaced != nil {
		f.gwant = f.gwant.withOrphans(false)
		err = f.unlinkPair(replaced)
	}
	if err != nil {
		f.reload()
		return err
	}
	f.free(freed)
	return nil
}

func (f *FS) free(blocks []uint32) {
	for _, b := range blocks {
		f.used[b] = false
	}
}
