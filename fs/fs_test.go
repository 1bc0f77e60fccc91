package fs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/spf13/afero"
)

// failingDev stops accepting programs and erases after budget operations,
// as flash does when power is cut.
type failingDev struct {
	flash.Device
	budget int
}

var errPowerCut = errors.New("power cut")

func (d *failingDev) WriteAt(p []byte, off int64) (int, error) {
	if d.budget <= 0 {
		return 0, errPowerCut
	}
	d.budget--
	if d.budget == 0 && len(p) > 16 { // the cut lands mid-program
		return d.Device.WriteAt(p[:len(p)/2], off)
	}
	return d.Device.WriteAt(p, off)
}

func (d *failingDev) Erase(off, n int64) error {
	if d.budget <= 0 {
		return errPowerCut
	}
	d.budget--
	return d.Device.Erase(off, n)
}

func newFS(t testing.TB) (*FS, *flash.Chip) {
	t.Helper()
	dev := flash.NewMemory(0x40000)
	if err := Format(dev); err != nil {
		t.Fatal(err)
	}
	f, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	return f, dev
}

func TestTagAndCRC(t *testing.T) {
	tests := []struct {
		typ, id, size uint32
		want          uint32
	}{
		{typeSuperblock, 0, 8, 0x0ff00008},
		{typeInline, 0, 24, 0x20100018},
		{typeCCRC, idNone, 12, 0x500ffc0c},
		{typeReg, 3, 10, 0x00100c0a},
	}
	for _, tt := range tests {
		tg := mkTag(tt.typ, tt.id, tt.size)
		if uint32(tg) != tt.want || tg.typ3() != tt.typ || tg.id() != tt.id || tg.size() != tt.size {
			t.Errorf("mkTag(%#x,%d,%d) = %#08x", tt.typ, tt.id, tt.size, uint32(tg))
		}
	}
	// littlefs CRC of "littlefs" from 0xffffffff, no final inversion.
	if got := crc(0xFFFFFFFF, []byte("123456789")); got != ^uint32(0xCBF43926) {
		t.Errorf("crc = %#x", got)
	}
}

func TestCTZMath(t *testing.T) {
	tests := []struct{ size, blocks int }{
		{0, 0}, {1, 1}, {4096, 1}, {4097, 2}, {4096 + 4092, 2}, {4096 + 4092 + 1, 3},
		{4096 + 4092 + 4088, 3}, {4096 + 4092 + 4088 + 4092 + 4084, 5},
	}
	for _, tt := range tests {
		if got := ctzBlocks(tt.size); got != tt.blocks {
			t.Errorf("ctzBlocks(%d) = %d, want %d", tt.size, got, tt.blocks)
		}
	}
	if i, o := ctzOffset(4096); i != 1 || o != 4 {
		t.Errorf("ctzOffset(4096) = %d,%d", i, o)
	}
}

func TestFilesAndDirs(t *testing.T) {
	f, dev := newFS(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80000 bytes, CTZ
	files := map[string][]byte{
		"/conf9.json":    []byte(`{"debug":{"level":3}}`),
		"/empty":         nil,
		"/big.bin":       big,
		"/dir/sub/x.txt": []byte("nested"),
		"/index.html":    bytes.Repeat([]byte("<p>"), 300), // 900 bytes > inline
	}
	if err := f.MkdirAll("/dir/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := afero.WriteFile(f, name, data, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	check := func(f *FS) {
		t.Helper()
		for name, want := range files {
			got, err := afero.ReadFile(f, name)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: got %d bytes (%v), want %d", name, len(got), err, len(want))
			}
		}
		names, err := afero.ReadDir(f, "/")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, n := range names {
			got = append(got, n.Name())
		}
		if fmt.Sprint(got) != "[big.bin conf9.json dir empty index.html]" {
			t.Fatalf("readdir / = %v", got)
		}
	}
	check(f)
	f2, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	check(f2)

	// Rename over an existing file, remove, non-empty dir.
	if err := f2.Rename("/conf9.json", "/conf9.json.bak"); err != nil {
		t.Fatal(err)
	}
	if _, err := f2.Stat("/conf9.json"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old name still there: %v", err)
	}
	if err := f2.Remove("/dir"); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("remove non-empty dir: %v", err)
	}
	_, used1 := f2.Usage()
	if err := f2.Remove("/big.bin"); err != nil {
		t.Fatal(err)
	}
	_, used2 := f2.Usage()
	if used1-used2 != 20*BlockSize {
		t.Fatalf("removing a 20-block file freed %d bytes", used1-used2)
	}
	if err := f2.RemoveAll("/dir"); err != nil {
		t.Fatal(err)
	}
	f3, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f3.Stat("/dir"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir survived RemoveAll: %v", err)
	}
	_, used3 := f3.Usage()
	if used3 != used2-4*BlockSize { // two dir pairs gone
		t.Fatalf("used after remount %d, want %d", used3, used2-4*BlockSize)
	}
}

func TestAppendChunksAndOffsets(t *testing.T) {
	f, dev := newFS(t)
	var want []byte
	chunk := make([]byte, 512)
	for i := 0; i < 200; i++ { // 100 KiB in 512-byte appends, as FS.Put does
		for j := range chunk {
			chunk[j] = byte(i + j)
		}
		fl, err := f.OpenFile("/up.bin", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		fl.Write(chunk)
		if err := fl.Close(); err != nil {
			t.Fatal(err)
		}
		want = append(want, chunk...)
	}
	// r+ write in the middle.
	fl, _ := f.OpenFile("/up.bin", os.O_RDWR, 0)
	fl.WriteAt([]byte("MIDDLE"), 50000)
	fl.Close()
	copy(want[50000:], "MIDDLE")
	f2, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := afero.ReadFile(f2, "/up.bin")
	if !bytes.Equal(got, want) {
		t.Fatal("appended file differs after remount")
	}
	_, used := f2.Usage()
	if used > int64(2+ctzBlocks(len(want)))*BlockSize {
		t.Fatalf("blocks leaked: %d used for %d bytes", used/BlockSize, len(want))
	}
}

func TestNoSpace(t *testing.T) {
	f, dev := newFS(t)
	big := make([]byte, 300<<10)
	err := afero.WriteFile(f, "/huge", big, 0)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
	// Nothing lost: the fs still mounts and has room for small files.
	f2, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := afero.WriteFile(f2, "/small", []byte("ok"), 0); err != nil {
		t.Fatal(err)
	}
}

// TestPowerLoss cuts power after every possible number of flash operations
// while replacing a file, and checks the filesystem always mounts with the
// old or the new contents.
func TestPowerLoss(t *testing.T) {
	oldData := bytes.Repeat([]byte("old!"), 3000)
	newData := bytes.Repeat([]byte("NEW?"), 4000)
	for budget := 0; budget < 40; budget++ {
		base := flash.NewMemory(0x40000)
		Format(base)
		f, _ := Mount(base)
		afero.WriteFile(f, "/conf9.json.tmp", []byte(`{"a":1}`), 0)
		afero.WriteFile(f, "/data", oldData, 0)
		fd := &failingDev{Device: base, budget: budget}
		f2, err := Mount(fd)
		if err != nil {
			t.Fatal(err)
		}
		afero.WriteFile(f2, "/data", newData, 0)
		f2.Rename("/conf9.json.tmp", "/conf9.json")
		f2.Mkdir("/d", 0)

		f3, err := Mount(base)
		if err != nil {
			t.Fatalf("budget %d: mount after power cut: %v", budget, err)
		}
		got, err := afero.ReadFile(f3, "/data")
		if err != nil || !(bytes.Equal(got, oldData) || bytes.Equal(got, newData)) {
			t.Fatalf("budget %d: /data has %d bytes (%v)", budget, len(got), err)
		}
		_, e1 := f3.Stat("/conf9.json")
		_, e2 := f3.Stat("/conf9.json.tmp")
		if (e1 == nil) == (e2 == nil) {
			t.Fatalf("budget %d: rename not atomic: new %v, old %v", budget, e1, e2)
		}
		// And the survivor is writable.
		if err := afero.WriteFile(f3, "/after", []byte("x"), 0); err != nil {
			t.Fatalf("budget %d: write after cut: %v", budget, err)
		}
	}
}

// FuzzMount feeds arbitrary flash contents to Mount: a corrupt image is an
// error (ErrCorrupt), never a panic; whatever mounts can be read and written
// without a panic either.
func FuzzMount(f *testing.F) {
	const size = 8 * BlockSize
	dev := flash.NewMemory(size)
	Format(dev)
	fsys, _ := Mount(dev)
	fsys.Mkdir("/d", 0)
	afero.WriteFile(fsys, "/a", []byte("hello"), 0)
	afero.WriteFile(fsys, "/d/big", bytes.Repeat([]byte("big"), 2000), 0)
	fsys.Rename("/a", "/d/a")
	img := make([]byte, size)
	dev.ReadAt(img, 0)
	f.Add(img)
	f.Add(img[:2*BlockSize])
	for _, name := range []string{"renames-then-rewrites", "moved-into-b", "expanded"} {
		ref := readImage(f, name)
		f.Add(ref[:size])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d := flash.NewMemory(size)
		d.WriteAt(b[:min(len(b), size)], 0)
		fsys, err := Mount(d)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("mount error %v is not ErrCorrupt", err)
			}
			return
		}
		afero.Walk(fsys, "/", func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				if fl, err := fsys.Open(p); err == nil {
					io.Copy(io.Discard, fl)
					fl.Close()
				}
			}
			return nil
		})
		fsys.Mkdir("/new", 0)
		afero.WriteFile(fsys, "/new/f", bytes.Repeat([]byte("x"), 5000), 0)
		fsys.Rename("/new/f", "/g")
		fsys.Remove("/g")
		fsys.RemoveAll("/d")
		if _, err := Mount(d); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("remount error %v is not ErrCorrupt", err)
		}
	})
}

func BenchmarkAppend512(b *testing.B) {
	f, _ := newFS(b)
	chunk := make([]byte, 512)
	b.SetBytes(512)
	for i := 0; b.Loop(); i++ {
		if i%150 == 0 {
			f.Remove("/up.bin")
		}
		fl, err := f.OpenFile("/up.bin", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0)
		if err != nil {
			b.Fatal(err)
		}
		fl.Write(chunk)
		fl.Close()
	}
}

// TestDirectorySplits fills one directory with 200 files with 60-character
// names: littlefs splits the directory over a chain of metadata pairs
// instead of refusing after about 50.
func TestDirectorySplits(t *testing.T) {
	f, dev := newFS(t)
	f.Mkdir("/many", 0)
	name := func(i int) string { return fmt.Sprintf("/many/%03d-%s", i, strings.Repeat("x", 56)) }
	for i := 0; i < 200; i++ {
		if err := afero.WriteFile(f, name(i), []byte(name(i)), 0); err != nil {
			t.Fatalf("file %d: %v", i, err)
		}
	}
	f2, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	d := f2.dirAt(f2.rootDir().pairs[0].entries[1].child)
	if len(d.pairs) < 4 {
		t.Fatalf("/many spans %d pairs", len(d.pairs))
	}
	names, _ := afero.ReadDir(f2, "/many")
	if len(names) != 200 {
		t.Fatalf("%d entries", len(names))
	}
	for i := 0; i < 200; i += 3 {
		if err := f2.Remove(name(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i++ {
		b, err := afero.ReadFile(f2, name(i))
		if (i%3 == 0) != errors.Is(err, os.ErrNotExist) || (err == nil && string(b) != name(i)) {
			t.Fatalf("file %d: %q, %v", i, b, err)
		}
	}
	// Renaming into a split directory is a no-space error at worst, never
	// a metadata-does-not-fit one.
	if err := f2.Rename(name(1), "/moved"); err != nil {
		t.Fatal(err)
	}
}

// TestSuperblockExpansion rewrites a root file until the root pair's
// revision reaches the wear-levelling period: {0,1} then keeps only a hard
// tail, and new root entries (conf9.json sorts before "littlefs") go to
// the superblock's new pair, where littlefs looks for them.
func TestSuperblockExpansion(t *testing.T) {
	f, dev := newFS(t)
	for i := 0; i < blockCycles+10; i++ {
		if err := afero.WriteFile(f, "/counter", []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := afero.WriteFile(f, "/conf9.json", []byte(`{}`), 0); err != nil {
		t.Fatal(err)
	}
	f2, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	if first := f2.chain[0]; len(first.entries) != 0 || !first.hard || f2.root == first {
		t.Fatalf("pair {0,1}: %d entries, hard tail %v", len(first.entries), first.hard)
	}
	if b, err := afero.ReadFile(f2, "/conf9.json"); err != nil || string(b) != "{}" {
		t.Fatalf("conf9.json: %q, %v", b, err)
	}
}

// flakyDev fails its nth erase or program (counting from 0), cleanly:
// nothing is written, later operations work.
type flakyDev struct {
	flash.Device
	n int
}

var errFlaky = errors.New("flash error")

func (d *flakyDev) WriteAt(p []byte, off int64) (int, error) {
	d.n--
	if d.n == -1 {
		return 0, errFlaky
	}
	return d.Device.WriteAt(p, off)
}

func (d *flakyDev) Erase(off, n int64) error {
	d.n--
	if d.n == -1 {
		return errFlaky
	}
	return d.Device.Erase(off, n)
}

// TestFlashErrorsReported: a failing erase or program during mkdir is an
// error, never a directory that seems made, and the filesystem stays
// usable.
func TestFlashErrorsReported(t *testing.T) {
	for n := 0; n < 4; n++ { // mkdir is 4 operations: erase+program of the new pair, of the parent
		base := flash.NewMemory(16 * BlockSize)
		Format(base)
		f, err := Mount(&flakyDev{Device: base, n: n})
		if err != nil {
			t.Fatal(err)
		}
		err = f.Mkdir("/d", 0)
		if !errors.Is(err, errFlaky) {
			t.Fatalf("flash op %d fails: mkdir says %v", n, err)
		}
		_, serr := f.Stat("/d")
		if (err == nil) != (serr == nil) {
			t.Fatalf("op %d: mkdir %v, stat %v", n, err, serr)
		}
		if err := f.Mkdir("/e", 0); err != nil {
			t.Fatalf("op %d: next mkdir: %v", n, err)
		}
		f2, _ := Mount(base)
		if _, serr := f2.Stat("/d"); (err == nil) != (serr == nil) {
			t.Fatalf("op %d: on flash: %v", n, serr)
		}
		if _, err := f2.Stat("/e"); err != nil {
			t.Fatalf("op %d: /e: %v", n, err)
		}
	}
}
