package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/spf13/afero"
)

// memModel is an independent, in-memory model of what the filesystem
// operations mean: a map from clean absolute path to a node. It knows
// nothing of littlefs; the differential tests hold FS to it.
type memModel map[string]*memNode

type memNode struct {
	dir  bool
	data []byte
}

func newMemModel() memModel { return memModel{"/": {dir: true}} }

func (m memModel) clone() memModel {
	c := memModel{}
	for p, n := range m {
		c[p] = &memNode{dir: n.dir, data: append([]byte(nil), n.data...)}
	}
	return c
}

func (m memModel) parentIsDir(p string) bool {
	n := m[path.Dir(p)]
	return n != nil && n.dir
}

func (m memModel) empty(dir string) bool {
	for p := range m {
		if p != dir && path.Dir(p) == dir {
			return false
		}
	}
	return true
}

var errModel = errors.New("refused by the model")

func (m memModel) write(p string, data []byte, appendTo bool) error {
	n := m[p]
	switch {
	case n == nil && !m.parentIsDir(p):
		return errModel
	case n != nil && n.dir:
		return errModel
	case n == nil:
		m[p] = &memNode{data: append([]byte(nil), data...)}
	case appendTo:
		n.data = append(n.data, data...)
	default:
		n.data = append([]byte(nil), data...)
	}
	return nil
}

func (m memModel) pwrite(p string, off int, data []byte, truncTo int) error {
	n := m[p]
	if n == nil || n.dir {
		return errModel
	}
	if truncTo >= 0 {
		if truncTo < len(n.data) {
			n.data = n.data[:truncTo]
		} else {
			n.data = append(n.data, make([]byte, truncTo-len(n.data))...)
		}
		return nil
	}
	if end := off + len(data); end > len(n.data) {
		n.data = append(n.data, make([]byte, end-len(n.data))...)
	}
	copy(n.data[off:], data)
	return nil
}

func (m memModel) mkdir(p string) error {
	if m[p] != nil || !m.parentIsDir(p) {
		return errModel
	}
	m[p] = &memNode{dir: true}
	return nil
}

func (m memModel) remove(p string) error {
	n := m[p]
	if n == nil || p == "/" || (n.dir && !m.empty(p)) {
		return errModel
	}
	delete(m, p)
	return nil
}

func (m memModel) rename(src, dst string) error {
	s := m[src]
	if s == nil || src == "/" {
		return errModel
	}
	if src == dst {
		return nil
	}
	if !m.parentIsDir(dst) || (s.dir && strings.HasPrefix(dst+"/", src+"/")) {
		return errModel
	}
	if d := m[dst]; d != nil && (d.dir != s.dir || (d.dir && !m.empty(dst))) {
		return errModel
	}
	moved := memModel{}
	for p, n := range m {
		if p == src || strings.HasPrefix(p, src+"/") {
			moved[dst+strings.TrimPrefix(p, src)] = n
			delete(m, p)
		}
	}
	delete(m, dst)
	for p, n := range moved {
		m[p] = n
	}
	return nil
}

func (m memModel) lines() []string {
	var out []string
	for p, n := range m {
		switch {
		case p == "/":
		case n.dir:
			out = append(out, "d "+p)
		default:
			out = append(out, fileLine(p, n.data))
		}
	}
	sort.Strings(out)
	return out
}

// opStream turns bytes (a fuzz input, or random bytes) into choices.
type opStream struct {
	b      []byte
	cycles uint32 // if set, the block_cycles of every mount (wear levelling sooner)
}

func (s *opStream) mount(dev flash.Device) (*FS, error) {
	f, err := Mount(dev)
	if err == nil && s.cycles > 0 {
		f.cycles = s.cycles
	}
	return f, err
}

func (s *opStream) n(k int) int {
	if k <= 1 {
		return 0
	}
	if len(s.b) == 0 {
		return 0
	}
	v := int(s.b[0])
	s.b = s.b[1:]
	if k > 256 && len(s.b) > 0 {
		v = v<<8 | int(s.b[0])
		s.b = s.b[1:]
	}
	return v % k
}

func (s *opStream) done() bool { return len(s.b) == 0 }

var (
	modelDirs  = []string{"/", "/d0", "/d1", "/d0/e", "/d1/e", "/" + strings.Repeat("L", 50) + "dir"}
	modelNames = []string{"a", "b", "conf9.json", "f", "zz", strings.Repeat("n", 60) + "1", strings.Repeat("n", 60) + "2",
		strings.Repeat("m", 55), "d0", "d1", "e", strings.Repeat("L", 50) + "dir"}
)

// path picks an existing entry of m (a directory if dir) two times in
// three, else a name from a small set so that names collide.
func (s *opStream) path(m memModel, dir bool) string {
	var have []string
	for p, n := range m {
		if n.dir == dir && p != "/" {
			have = append(have, p)
		}
	}
	if len(have) > 0 && s.n(3) != 0 {
		sort.Strings(have)
		return have[s.n(len(have))]
	}
	if dir {
		return modelDirs[1+s.n(len(modelDirs)-1)]
	}
	d := modelDirs[s.n(len(modelDirs))]
	return path.Join(d, modelNames[s.n(len(modelNames))])
}

func (s *opStream) size() int {
	switch s.n(8) {
	case 0, 1, 2:
		return s.n(130)
	case 3, 4:
		return s.n(600)
	case 5, 6:
		return s.n(9000)
	default:
		return s.n(25000)
	}
}

func payload(seed, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(seed), uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// step is one operation, applied to the model and to the filesystem.
type step struct {
	desc string
	fs   func(f *FS) error
	mod  func(m memModel) error
}

func nextStep(s *opStream, m memModel, k int) step {
	switch op := s.n(10); op {
	case 0, 1:
		p, data := s.path(m, false), payload(k, s.size())
		return step{fmt.Sprintf("write %s %d", p, len(data)),
			func(f *FS) error { return afero.WriteFile(f, p, data, 0) },
			func(m memModel) error { return m.write(p, data, false) }}
	case 2:
		p, data := s.path(m, false), payload(k, s.size()/2)
		return step{fmt.Sprintf("append %s %d", p, len(data)),
			func(f *FS) error {
				fl, err := f.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0)
				if err != nil {
					return err
				}
				fl.Write(data)
				return fl.Close()
			},
			func(m memModel) error { return m.write(p, data, true) }}
	case 3:
		p := path.Join(s.path(m, true), modelNames[s.n(len(modelNames))])
		if s.n(2) == 0 {
			p = modelDirs[1+s.n(len(modelDirs)-1)]
		}
		return step{"mkdir " + p, func(f *FS) error { return f.Mkdir(p, 0) }, func(m memModel) error { return m.mkdir(p) }}
	case 4, 5:
		p := s.path(m, s.n(3) == 0)
		return step{"remove " + p, func(f *FS) error { return f.Remove(p) }, func(m memModel) error { return m.remove(p) }}
	case 6, 7:
		dir := s.n(4) == 0
		a, b := s.path(m, dir), path.Join(s.path(m, true), modelNames[s.n(len(modelNames))])
		if s.n(3) == 0 {
			b = s.path(m, dir) // over an existing entry
		}
		return step{"rename " + a + " " + b, func(f *FS) error { return f.Rename(a, b) }, func(m memModel) error { return m.rename(a, b) }}
	default:
		p, off, data, trunc := s.path(m, false), s.n(9000), payload(k, s.n(3000)), -1
		if s.n(3) == 0 {
			trunc = s.n(9000)
		}
		return step{fmt.Sprintf("pwrite %s @%d %d trunc %d", p, off, len(data), trunc),
			func(f *FS) error {
				fl, err := f.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					return err
				}
				if st, _ := fl.Stat(); st != nil && st.IsDir() {
					fl.Close()
					return os.ErrInvalid
				}
				if trunc >= 0 {
					fl.Truncate(int64(trunc))
				} else {
					fl.WriteAt(data, int64(off))
				}
				return fl.Close()
			},
			func(m memModel) error { return m.pwrite(p, off, data, trunc) }}
	}
}

func fsLines(t testing.TB, f *FS) []string { return sortedCopy(treeLines(t, f)) }

// runDifferential applies the operations of s to a fresh filesystem on dev
// and to the model, checking after each that both agree (and, every few
// operations, after a remount). It returns the model.
func runDifferential(t testing.TB, dev flash.Device, s *opStream, maxOps int) memModel {
	t.Helper()
	if err := Format(dev); err != nil {
		t.Fatal(err)
	}
	f, err := s.mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	m := newMemModel()
	stats := map[string]int{}
	defer func() { t.Logf("ops done/refused/no-space by kind: %v; final tree %d entries", stats, len(m)-1) }()
	for k := 0; k < maxOps && !s.done(); k++ {
		st := nextStep(s, m, k)
		before := m.clone()
		ferr := st.fs(f)
		merr := st.mod(m)
		kind := strings.Fields(st.desc)[0]
		switch {
		case errors.Is(ferr, ErrNoSpace):
			stats[kind+"/nospc"]++
		case ferr != nil:
			stats[kind+"/refused"]++
		default:
			stats[kind]++
		}
		switch {
		case errors.Is(ferr, ErrNoSpace):
			// The model cannot know the disk is full: the operation must
			// have changed nothing, except that an open-for-create commits.
			m = before
			if strings.HasPrefix(st.desc, "write ") || strings.HasPrefix(st.desc, "append ") {
				p := strings.Fields(st.desc)[1]
				if before[p] == nil && merr == nil {
					m[p] = &memNode{}
				}
			}
		case (ferr == nil) != (merr == nil):
			t.Fatalf("op %d %s: fs says %v, model says %v", k, st.desc, ferr, merr)
		}
		if got, want := fsLines(t, f), m.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("op %d %s: trees differ:\n%s", k, st.desc, diffLines(want, got))
		}
		if k%16 == 15 {
			if f, err = s.mount(dev); err != nil {
				t.Fatalf("op %d: remount: %v", k, err)
			}
			if got, want := fsLines(t, f), m.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("op %d %s: after remount:\n%s", k, st.desc, diffLines(want, got))
			}
		}
	}
	return m
}

func randomOps(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 0x14))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestDifferentialRandomHistories runs seeded random histories of up to
// 400 operations (about 2,000 in all) on a 256 KiB filesystem and on the
// in-memory model.
func TestDifferentialRandomHistories(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			// Odd seeds with block_cycles 4: relocations and expansion.
			runDifferential(t, flash.NewMemory(64*BlockSize), &opStream{b: randomOps(seed, 4000), cycles: uint32(seed%2) * 4}, 400)
		})
	}
	t.Run("full-disk", func(t *testing.T) {
		runDifferential(t, flash.NewMemory(16*BlockSize), &opStream{b: randomOps(99, 4000)}, 400)
	})
}

// TestDifferentialKillPoints cuts power after every flash operation of
// short random histories: after the cut the filesystem must mount with the
// tree from just before or just after the interrupted operation, and take
// further writes.
func TestDifferentialKillPoints(t *testing.T) {
	seeds := []uint64{11, 12, 13, 14, 15, 16}
	if testing.Short() {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			ops := randomOps(seed, 1000)
			cycles := uint32(0)
			if seed%2 == 0 {
				cycles = 3 // relocations and superblock expansion within the history
			}
			// Count the flash operations of the whole history.
			counter := &failingDev{Device: flash.NewMemory(48 * BlockSize), budget: 1 << 30}
			runDifferential(t, counter, &opStream{b: ops, cycles: cycles}, killOps)
			total := 1<<30 - counter.budget
			for cut := 1; cut < total; cut++ {
				killAt(t, ops, cycles, cut)
			}
			t.Logf("seed %d: %d kill points", seed, total)
		})
	}
}

// killOps is the length of the histories cut at every flash operation.
const killOps = 100

func killAt(t *testing.T, ops []byte, cycles uint32, cut int) {
	t.Helper()
	base := flash.NewMemory(48 * BlockSize)
	dev := &failingDev{Device: base, budget: cut}
	if err := Format(dev); err != nil {
		return // cut during format: nothing to check
	}
	s := &opStream{b: ops, cycles: cycles}
	f, err := s.mount(dev)
	if err != nil {
		t.Fatalf("cut %d: mount: %v", cut, err)
	}
	m := newMemModel()
	var before memModel
	var desc string
	for k := 0; k < killOps && !s.done(); k++ {
		st := nextStep(s, m, k)
		before, desc = m.clone(), st.desc
		ferr := st.fs(f)
		merr := st.mod(m)
		if dev.budget <= 0 {
			break // power is gone: this operation may or may not have happened
		}
		if errors.Is(ferr, ErrNoSpace) {
			t.Fatalf("cut %d: unexpected full disk", cut)
		}
		if (ferr == nil) != (merr == nil) {
			t.Fatalf("cut %d op %d %s: fs says %v, model says %v", cut, k, st.desc, ferr, merr)
		}
		before = nil
	}
	f2, err := s.mount(base)
	if err != nil {
		t.Fatalf("cut %d (during %s): mount after the cut: %v", cut, desc, err)
	}
	got := strings.Join(fsLines(t, f2), "\n")
	after := strings.Join(m.lines(), "\n")
	created := ""
	if before != nil && (strings.HasPrefix(desc, "write ") || strings.HasPrefix(desc, "append ")) {
		// Opening with O_CREATE commits the empty file first, as in littlefs.
		if p := strings.Fields(desc)[1]; before[p] == nil && before.parentIsDir(p) {
			c := before.clone()
			c[p] = &memNode{}
			created = strings.Join(c.lines(), "\n")
		}
	}
	if got != after && got != created && (before == nil || got != strings.Join(before.lines(), "\n")) {
		t.Fatalf("cut %d during %s: tree is neither before nor after:\n%s", cut, desc, diffLines(m.lines(), fsLines(t, f2)))
	}
	// The survivor takes writes and keeps them.
	if err := afero.WriteFile(f2, "/after-cut", bytes.Repeat([]byte("x"), 5000), 0); err != nil {
		t.Fatalf("cut %d: write after the cut: %v", cut, err)
	}
	f3, err := s.mount(base)
	if err != nil {
		t.Fatalf("cut %d: remount: %v", cut, err)
	}
	if b, err := afero.ReadFile(f3, "/after-cut"); err != nil || len(b) != 5000 {
		t.Fatalf("cut %d: write after the cut lost: %v", cut, err)
	}
}

// FuzzDifferential drives the filesystem and the model with operations
// decoded from the fuzz input (go test -fuzz FuzzDifferential ./fs).
func FuzzDifferential(f *testing.F) {
	f.Add(randomOps(1, 200))
	f.Add(randomOps(2, 600))
	var seed [8]byte
	binary.LittleEndian.PutUint64(seed[:], 42)
	f.Add(seed[:])
	f.Fuzz(func(t *testing.T, ops []byte) {
		runDifferential(t, flash.NewMemory(24*BlockSize), &opStream{b: ops, cycles: 5}, 200)
	})
}

// TestCrossDirRenameCut cuts power between the two commits of a
// cross-directory rename: the destination holds the entry and the global
// state records the move, so the source entry is hidden at mount and
// deleted for good by the first change.
func TestCrossDirRenameCut(t *testing.T) {
	base := flash.NewMemory(32 * BlockSize)
	Format(base)
	f, _ := Mount(base)
	f.Mkdir("/a", 0)
	f.Mkdir("/b", 0)
	want := payload(1, 5000)
	afero.WriteFile(f, "/a/x", want, 0)
	afero.WriteFile(f, "/a/keep", []byte("k"), 0)
	dev := &failingDev{Device: base, budget: 2} // erase + program of /b's pair
	f2, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.Rename("/a/x", "/b/y"); !errors.Is(err, errPowerCut) {
		t.Fatalf("rename: %v, want the power cut", err)
	}
	f3, err := Mount(base)
	if err != nil {
		t.Fatal(err)
	}
	if !f3.gdisk.hasMove() || f3.moveFix == nil {
		t.Fatalf("no pending move on flash: %x", f3.gdisk)
	}
	wantTree := []string{"d /a", "d /b", fileLine("/a/keep", []byte("k")), fileLine("/b/y", want)}
	sort.Strings(wantTree)
	if got := fsLines(t, f3); strings.Join(got, "\n") != strings.Join(wantTree, "\n") {
		t.Fatalf("after the cut:\n%s", diffLines(wantTree, got))
	}
	if err := f3.Mkdir("/c", 0); err != nil { // the first change fixes the move
		t.Fatal(err)
	}
	f4, err := Mount(base)
	if err != nil {
		t.Fatal(err)
	}
	if f4.gdisk != (gstate{}) {
		t.Fatalf("global state %x after the fix, want zero", f4.gdisk)
	}
	wantTree = append(wantTree, "d /c")
	sort.Strings(wantTree)
	if got := fsLines(t, f4); strings.Join(got, "\n") != strings.Join(wantTree, "\n") {
		t.Fatalf("after the fix:\n%s", diffLines(wantTree, got))
	}
	// The moved file's blocks are shared by nobody: rewriting it and
	// removing the source directory keeps it.
	if err := f4.Remove("/a/keep"); err != nil {
		t.Fatal(err)
	}
	if err := f4.Remove("/a"); err != nil {
		t.Fatal(err)
	}
	if got, err := afero.ReadFile(f4, "/b/y"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("/b/y: %d bytes, %v", len(got), err)
	}
}

// TestRelocatedPairCut builds the state littlefs leaves when it relocates a
// directory pair (wear levelling: one block replaced) and power is cut
// before the predecessor's tail follows: the parent points at the new pair,
// the metadata list at the old one, the orphan flag is set. The new pair's
// contents are what count; the first change re-links it.
func TestRelocatedPairCut(t *testing.T) {
	dev := flash.NewMemory(32 * BlockSize)
	Format(dev)
	f, _ := Mount(dev)
	f.Mkdir("/a", 0)
	afero.WriteFile(f, "/a/old", []byte("old"), 0)
	a := f.pairAt(f.root.entries[1].child)
	// Relocate: compact /a, with a new entry, into a fresh block in place
	// of its older one.
	nb, err := f.alloc()
	if err != nil {
		t.Fatal(err)
	}
	a.blocks[1] = nb
	a.entries = append(a.entries, &entry{name: "new", typ: typeReg, inline: []byte("relocated")})
	if err := f.commit(a); err != nil {
		t.Fatal(err)
	}
	// The parent learns the new pair (with the orphan flag); the list does not.
	f.gwant = f.gwant.withOrphans(true)
	f.root.entries[1].child = a.blocks
	if err := f.commit(f.root); err != nil {
		t.Fatal(err)
	}
	f2, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"d /a", fileLine("/a/new", []byte("relocated")), fileLine("/a/old", []byte("old"))}
	sort.Strings(want)
	if got := fsLines(t, f2); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("half-orphan read:\n%s", diffLines(want, got))
	}
	if err := f2.Mkdir("/b", 0); err != nil { // deorphan re-links /a's new pair
		t.Fatal(err)
	}
	f3, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	linked := false
	for _, m := range f3.chain { // the list walk itself now reaches the new pair
		linked = linked || sortedPair(m.blocks) == sortedPair(a.blocks)
	}
	if !linked || f3.orphans || f3.gdisk.hasOrphans() {
		t.Fatalf("new pair %v in the list: %v; gstate %x", a.blocks, linked, f3.gdisk)
	}
	want = append(want, "d /b")
	sort.Strings(want)
	if got := fsLines(t, f3); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after the fix:\n%s", diffLines(want, got))
	}
}
