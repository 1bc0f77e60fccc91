package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// ErrCorrupt reports a filesystem that cannot be read.
var ErrCorrupt = errors.New("littlefs: corrupt filesystem")

// entry is one file or directory as recorded in a metadata pair.
type entry struct {
	name   string
	typ    uint32 // typeReg, typeDir or typeSuperblock
	inline []byte // file data when stored inline
	ctz    bool
	head   uint32 // CTZ head block
	size   uint32 // CTZ size
	child  [2]uint32
	attrs  map[uint8][]byte // user attributes, kept as found
	sbData []byte           // superblock inline struct (id 0 of the root pair)
}

func (e *entry) fileSize() int64 {
	if e.ctz {
		return int64(e.size)
	}
	return int64(len(e.inline))
}

// mdir is one metadata pair as the filesystem sees it after replaying its
// most recent valid commits.
type mdir struct {
	blocks  [2]uint32 // blocks[0] holds the current revision
	rev     uint32
	entries []*entry // by id
	tail    [2]uint32
	hard    bool   // tail is a hard tail (same directory)
	gstate  gstate // this pair's share of the global state (its last MOVESTATE)
	fresh   bool   // allocated, never written: not relocated on its first commit
}

func (m *mdir) hasTail() bool { return m.tail[0] != null || m.tail[1] != null }

// fetchPair reads the metadata pair (a, b).
func (f *FS) fetchPair(a, b uint32) (*mdir, error) {
	if a >= f.blockCount || b >= f.blockCount {
		return nil, fmt.Errorf("%w: metadata pair {%#x, %#x} out of range", ErrCorrupt, a, b)
	}
	var revs [2]uint32
	var bufs [2][]byte
	for i, blk := range []uint32{a, b} {
		bufs[i] = make([]byte, BlockSize)
		if _, err := f.dev.ReadAt(bufs[i], int64(blk)*BlockSize); err != nil {
			return nil, err
		}
		revs[i] = le32(bufs[i])
	}
	order := []int{0, 1}
	if seqLess(revs[0], revs[1]) {
		order = []int{1, 0}
	}
	pair := [2]uint32{a, b}
	for _, i := range order {
		if m := parseBlock(bufs[i]); m != nil {
			m.blocks = [2]uint32{pair[i], pair[1-i]}
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: no valid commit in metadata pair {%#x, %#x}", ErrCorrupt, a, b)
}

// parseBlock replays the commits of one metadata block and returns its state
// at the last commit whose CRC is valid, or nil if there is none.
func parseBlock(buf []byte) *mdir {
	var (
		good   *mdir
		cur    = &mdir{tail: [2]uint32{null, null}}
		slots  []*entry
		ptag   = tag(0xFFFFFFFF)
		c      = crc(0xFFFFFFFF, buf[:4])
		off    = uint32(4)
		gs     gstate
		tail   = [2]uint32{null, null}
		hard   bool
		ensure = func(id uint32) *entry {
			for uint32(len(slots)) <= id {
				slots = append(slots, &entry{})
			}
			return slots[id]
		}
	)
	cur.rev = le32(buf)
	for off+4 <= BlockSize {
		raw := buf[off : off+4]
		t := tag(binary.BigEndian.Uint32(raw)) ^ ptag
		if !t.valid() {
			break
		}
		if off+t.dsize() > BlockSize {
			break
		}
		data := buf[off+4 : off+t.dsize()]
		if t.typ1() == typeCCRC { // commit CRC (any CRC type, as littlefs v2.0 reads)
			c = crc(c, raw)
			if len(data) < 4 || le32(data) != c {
				break
			}
			// Commit point: snapshot.
			snap := &mdir{rev: cur.rev, tail: tail, hard: hard, gstate: gs}
			for _, e := range slots {
				cp := *e
				snap.entries = append(snap.entries, &cp)
			}
			good = snap
			ptag = t ^ tag(uint32(t.chunk()&1)<<31)
			off += t.dsize()
			c = 0xFFFFFFFF
			continue
		}
		c = crc(c, buf[off:off+t.dsize()])
		switch {
		case t.typ3() == typeFCRC:
		case t.typ1() == 0x000: // name
			e := ensure(t.id())
			e.name, e.typ = string(data), t.typ3()
		case t.typ3() == typeCreate:
			if int(t.id()) <= len(slots) {
				slots = append(slots[:t.id()], append([]*entry{{}}, slots[t.id():]...)...)
			}
		case t.typ3() == typeDelete:
			if int(t.id()) < len(slots) {
				slots = append(slots[:t.id()], slots[t.id()+1:]...)
			}
		case t.typ1() == 0x200 && !t.deleted(): // struct
			e := ensure(t.id())
			switch t.typ3() {
			case typeDirStruct:
				if len(data) == 8 {
					e.child = [2]uint32{le32(data), le32(data[4:])}
				}
			case typeInline:
				if e.typ == typeSuperblock {
					e.sbData = bytes.Clone(data)
				} else {
					e.inline, e.ctz = bytes.Clone(data), false
				}
			case typeCTZ:
				if len(data) == 8 {
					e.head, e.size, e.ctz, e.inline = le32(data), le32(data[4:]), true, nil
				}
			}
		case t.typ1() == typeUserAttr:
			e := ensure(t.id())
			if e.attrs == nil {
				e.attrs = map[uint8][]byte{}
			}
			if t.deleted() {
				delete(e.attrs, t.chunk())
			} else {
				e.attrs[t.chunk()] = bytes.Clone(data)
			}
		case t.typ1() == 0x600 && len(data) == 8:
			tail = [2]uint32{le32(data), le32(data[4:])}
			hard = t.chunk()&1 == 1
		case t.typ3() == typeMoveState && len(data) == 12:
			// Each MOVESTATE holds the pair's running value: the last one
			// counts (lfs_dir_getgstate); pairs are XORed together.
			copy(gs[:], data)
		}
		ptag = t
		off += t.dsize()
	}
	if good == nil {
		return nil
	}
	return good
}

// encodePair renders a compacted metadata block: revision, every entry,
// tail, move state, commit CRC. It reports false when it does not fit.
func encodePair(m *mdir) ([]byte, bool) {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, m.rev)
	c := crc(0xFFFFFFFF, b.Bytes())
	ptag := tag(0xFFFFFFFF)
	put := func(t tag, data []byte) {
		var raw [4]byte
		binary.BigEndian.PutUint32(raw[:], uint32(t^ptag))
		c = crc(c, raw[:])
		c = crc(c, data)
		b.Write(raw[:])
		b.Write(data)
		ptag = t
	}
	for id, e := range m.entries {
		put(mkTag(e.typ, uint32(id), uint32(len(e.name))), []byte(e.name))
		switch {
		case e.typ == typeSuperblock:
			put(mkTag(typeInline, uint32(id), uint32(len(e.sbData))), e.sbData)
		case e.typ == typeDir:
			put(mkTag(typeDirStruct, uint32(id), 8), pairBytes(e.child))
		case e.ctz:
			put(mkTag(typeCTZ, uint32(id), 8), pairBytes([2]uint32{e.head, e.size}))
		default:
			put(mkTag(typeInline, uint32(id), uint32(len(e.inline))), e.inline)
		}
		keys := make([]int, 0, len(e.attrs))
		for k := range e.attrs {
			keys = append(keys, int(k))
		}
		sort.Ints(keys)
		for _, k := range keys {
			put(mkTag(typeUserAttr|uint32(k), uint32(id), uint32(len(e.attrs[uint8(k)]))), e.attrs[uint8(k)])
		}
	}
	if m.hasTail() {
		typ := uint32(typeSoftTail)
		if m.hard {
			typ = typeHardTail
		}
		put(mkTag(typ, idNone, 8), pairBytes(m.tail))
	}
	if m.gstate != (gstate{}) {
		put(mkTag(typeMoveState, idNone, 12), m.gstate[:])
	}
	// Commit CRC, padded to the program size.
	start := b.Len()
	end := (start + 8 + progSize - 1) / progSize * progSize
	t := mkTag(typeCCRC, idNone, uint32(end-start-4))
	var raw [4]byte
	binary.BigEndian.PutUint32(raw[:], uint32(t^ptag))
	c = crc(c, raw[:])
	b.Write(raw[:])
	binary.Write(&b, binary.LittleEndian, c)
	for b.Len() < end {
		b.WriteByte(0xFF)
	}
	return b.Bytes(), start+8 <= BlockSize-8 && b.Len() <= BlockSize
}

// entriesSize is what littlefs weighs to decide a split: every tag and
// datum of the entries (lfs_dir_commit_size).
func entriesSize(es []*entry) int {
	n := 0
	for _, e := range es {
		n += 4 + len(e.name) + 4
		switch {
		case e.typ == typeSuperblock:
			n += len(e.sbData)
		case e.typ == typeDir, e.ctz:
			n += 8
		default:
			n += len(e.inline)
		}
		for _, a := range e.attrs {
			n += 4 + len(a)
		}
	}
	return n
}

func pairBytes(p [2]uint32) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, p[0])
	binary.LittleEndian.PutUint32(b[4:], p[1])
	return b
}

// splitLimit is the most entry bytes a compacted pair keeps before it is
// split: half a block, aligned to the program size (lfs_dir_compact).
const splitLimit = min(BlockSize-36, (BlockSize/2+progSize-1)/progSize*progSize)

// commit writes m compacted into its other block with the next revision,
// as lfs_dir_compact does: first splitting off a tail pair while the
// entries exceed half a block, expanding the superblock pair when its
// revision reaches the wear-levelling period, and folding the pending
// change of the global state into m's share. The old block stays intact
// until the new one is complete, so a power cut leaves the old or the new.
// m must be in f.chain unless it is a new, not yet linked pair.
func (f *FS) commit(m *mdir) error {
	f.dropMoving(m)
	for len(m.entries) > 1 {
		size := entriesSize(m.entries)
		if len(m.entries) < 0xff && size <= splitLimit {
			break
		}
		half := len(m.entries) / 2
		t, err := f.newPair()
		if err != nil {
			if errors.Is(err, ErrNoSpace) && size <= BlockSize-36 {
				break // over-compact, as littlefs does when it cannot split
			}
			return err
		}
		if err := f.splitInto(m, t, half); err != nil {
			return err
		}
	}
	next := m.rev + 1
	worn := f.cycles > 0 && next%(f.cycles+1) == 0
	relocate := worn && !m.fresh && f.chainIndex(m) > 0
	if worn && sortedPair(m.blocks) == [2]uint32{0, 1} && f.usedBlocks() < int(f.blockCount/2) {
		// Superblock expansion: everything moves to a new pair; {0,1}
		// keeps only a hard tail to it.
		t, err := f.newPair()
		switch {
		case err == nil:
			if err := f.splitInto(m, t, 0); err != nil {
				return err
			}
			if f.root == m {
				f.root = t
			}
		case !errors.Is(err, ErrNoSpace):
			return err
		}
	}
	if relocate {
		// Wear levelling: the older block is replaced by a fresh one, then
		// the parent and the predecessor are pointed at the new pair. As in
		// littlefs, the relocated block holds no global state: m's share
		// and the pending change go to the next commit (the parent's).
		nb, err := f.alloc()
		switch {
		case err == nil:
			f.gdisk = f.gdisk.xor(m.gstate)
			m.gstate = gstate{}
			m.rev = next
			old := m.blocks
			m.blocks[1] = nb
			if err := f.writePair(m); err != nil {
				return err
			}
			return f.relink(m, old)
		case !errors.Is(err, ErrNoSpace):
			return err
		}
	}
	m.gstate = m.gstate.xor(f.gdisk.xor(f.gwant))
	f.gdisk = f.gwant
	m.rev = next
	return f.writePair(m)
}

// relink points the parent entry and the list predecessor of m, which was
// relocated from old, at m's blocks (lfs_fs_relocate): the parent first,
// under the orphan flag, then the predecessor's tail.
func (f *FS) relink(m *mdir, old [2]uint32) error {
	for _, p := range f.chain {
		for _, e := range p.entries {
			if e.typ == typeDir && sortedPair(e.child) == sortedPair(old) {
				f.gwant = f.gwant.withOrphans(true)
				e.child = m.blocks
				if err := f.commit(p); err != nil {
					return err
				}
				f.gwant = f.gwant.withOrphans(false)
			}
		}
	}
	if i := f.chainIndex(m); i > 0 {
		pred := f.chain[i-1]
		pred.tail = m.blocks
		if err := f.commit(pred); err != nil {
			return err
		}
	}
	if !contains(m.blocks[:], old[1]) {
		f.used[old[1]] = false
	}
	return nil
}

// splitInto moves m's entries from index at on into the new pair t, which
// takes m's tail, and makes t m's hard tail.
func (f *FS) splitInto(m, t *mdir, at int) error {
	t.entries = append([]*entry(nil), m.entries[at:]...)
	t.tail, t.hard = m.tail, m.hard
	if i := f.chainIndex(m); i >= 0 {
		f.chain = insertPair(f.chain, i+1, t)
	}
	if err := f.commit(t); err != nil {
		return err
	}
	m.entries = append([]*entry(nil), m.entries[:at]...)
	m.tail, m.hard = t.blocks, true
	return nil
}

// writePair programs m (already holding its new revision) into its other
// block and makes that block current.
func (f *FS) writePair(m *mdir) error {
	data, ok := encodePair(m)
	if !ok {
		return fmt.Errorf("%w: directory entry too large for a metadata block", ErrNoSpace)
	}
	other := m.blocks[1]
	if err := f.dev.Erase(int64(other)*BlockSize, BlockSize); err != nil {
		return err
	}
	if _, err := f.dev.WriteAt(data, int64(other)*BlockSize); err != nil {
		return err
	}
	m.blocks = [2]uint32{other, m.blocks[0]}
	m.fresh = false
	return nil
}
