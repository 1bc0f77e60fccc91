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
	hard    bool     // tail is a hard tail (same directory)
	gdelta  [12]byte // this pair's share of the global move state
	freeOff int      // first byte after the last commit in blocks[0]
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
		gdelta [12]byte
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
		if t.typ1() == typeCCRC && t.chunk()&0x80 == 0 { // commit CRC
			c = crc(c, raw)
			if len(data) < 4 || le32(data) != c {
				break
			}
			// Commit point: snapshot.
			snap := &mdir{rev: cur.rev, tail: tail, hard: hard, gdelta: gdelta, freeOff: int(off + t.dsize())}
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
			for i := range gdelta {
				gdelta[i] ^= data[i]
			}
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
	if m.gdelta != [12]byte{} {
		put(mkTag(typeMoveState, idNone, 12), m.gdelta[:])
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
	return b.Bytes(), b.Len() <= BlockSize
}

func pairBytes(p [2]uint32) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, p[0])
	binary.LittleEndian.PutUint32(b[4:], p[1])
	return b
}

// commitPair writes m compacted into its other block with the next
// revision. The old block stays intact until the new one is complete, so a
// power cut at any point leaves either the old or the new state.
func (f *FS) commitPair(m *mdir) error {
	next := *m
	next.rev = m.rev + 1
	next.blocks = [2]uint32{m.blocks[1], m.blocks[0]}
	data, ok := encodePair(&next)
	if !ok {
		return errNoSpaceMeta
	}
	if err := f.dev.Erase(int64(next.blocks[0])*BlockSize, BlockSize); err != nil {
		return err
	}
	if _, err := f.dev.WriteAt(data, int64(next.blocks[0])*BlockSize); err != nil {
		return err
	}
	next.freeOff = len(data)
	*m = next
	return nil
}

var errNoSpaceMeta = errors.New("littlefs: directory metadata does not fit in one block")
