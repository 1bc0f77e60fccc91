package fs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/spf13/afero"
)

// Fixtures written by the reference C littlefs of the firmware's version.
//
// Tool: littlefs v2.1.4 as vendored by mongoose-os-libs/vfs-fs-lfs at tag
// 2.17.0 (LFS_VERSION 0x00020001, disk version 2.0), built outside the
// repository, driven by a small harness with the ESP32 root fs geometry of
// mgos_vfs_lfs.c and MGOS_ROOT_FS_OPTS_LFS {"bs":4096,"is":128}: block 4096,
// read = prog = 128, cache 128, lookahead 64 bytes, block_cycles 512. The
// harness runs a seeded random history (xorshift64, seed*2654435761+1):
// create/overwrite (sizes: 40% inline <130 B, 30% <600 B, 22% <12 KiB, 8%
// <30 KiB), append, mkdir, remove, rmdir, rename file and directory within
// and across directories, truncate, pwrite; above 60% use it prefers
// removals (except in the full-disk profile). Each image has a .tree file:
// the reference's own listing of it ("d path" / "f path size fnv64a"), in
// its readdir order.
//
//	image            seed ops    blocks profile: result
//	mix1             1    3000   64     mixed: 367 creates, 231 renames, 106 dir renames, 107 rmdirs
//	mix2             2    3000   64     mixed: 398 creates, 183 renames, 135 dir renames, 96 rmdirs
//	mix3             3    3000   64     mixed: 307 creates, 196 renames, 112 dir renames, 104 rmdirs
//	expanded         4    20000  64     17018 rewrites of 4 root files: superblock expansion
//	split            5    1500   64     mixed, then /many: 60 files with 60-character names (9 removed)
//	full             6    1500   32     no removal preference: 431 ops refused with LFS_ERR_NOSPC
//	mklfs            7    400    64     mklfs's geometry (prog 64, cache 256, lookahead 1024): a bundle image
//
// The two images of ../shared/testdata/littlefs (renames-then-rewrites and
// rmdir/moved-into-b) are the reproductions of the gstate bugs.
var referenceImages = []string{"mix1", "mix2", "mix3", "expanded", "split", "full", "mklfs", "renames-then-rewrites", "moved-into-b"}

func readImage(t testing.TB, name string) []byte {
	t.Helper()
	fz, err := os.Open(filepath.Join("testdata", "ref", name+".img.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer fz.Close()
	zr, err := gzip.NewReader(fz)
	if err != nil {
		t.Fatal(err)
	}
	img, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func deviceWith(img []byte) *flash.Chip {
	dev := flash.NewMemory(int64(len(img)))
	dev.WriteAt(img, 0)
	return dev
}

// treeLines lists fsys as the reference harness does: depth first, each
// directory in readdir order, "d path" or "f path size fnv64a".
func treeLines(t testing.TB, fsys afero.Fs) []string {
	t.Helper()
	var out []string
	var walk func(dir string)
	walk = func(dir string) {
		d, err := fsys.Open(dir)
		if err != nil {
			t.Fatalf("open %s: %v", dir, err)
		}
		infos, err := d.Readdir(-1)
		d.Close()
		if err != nil {
			t.Fatalf("readdir %s: %v", dir, err)
		}
		for _, fi := range infos {
			p := path.Join(dir, fi.Name())
			if fi.IsDir() {
				out = append(out, "d "+p)
				walk(p)
				continue
			}
			data, err := afero.ReadFile(fsys, p)
			if err != nil {
				t.Fatalf("read %s: %v", p, err)
			}
			out = append(out, fileLine(p, data))
		}
	}
	walk("/")
	return out
}

func fileLine(p string, data []byte) string {
	h := fnv.New64a()
	h.Write(data)
	return fmt.Sprintf("f %s %d %016x", p, len(data), h.Sum64())
}

func readTree(t testing.TB, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "ref", name+".tree"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func diffLines(want, got []string) string {
	w := map[string]bool{}
	for _, l := range want {
		w[l] = true
	}
	g := map[string]bool{}
	for _, l := range got {
		g[l] = true
	}
	var d []string
	for _, l := range want {
		if !g[l] {
			d = append(d, "missing: "+l)
		}
	}
	for _, l := range got {
		if !w[l] {
			d = append(d, "extra:   "+l)
		}
	}
	if len(d) == 0 && strings.Join(want, "\n") != strings.Join(got, "\n") {
		d = append(d, "same entries, different order")
	}
	if len(d) > 10 {
		d = append(d[:10], fmt.Sprintf("... %d more", len(d)-10))
	}
	return strings.Join(d, "\n")
}

// model is the expected tree: path -> "" for a directory, else its line.
type model map[string]string

func modelOf(lines []string) model {
	m := model{}
	for _, l := range lines {
		f := strings.Fields(l)
		if f[0] == "d" {
			m[f[1]] = ""
		} else {
			m[f[1]] = l
		}
	}
	return m
}

func (m model) lines() []string {
	var out []string
	for p, l := range m {
		if l == "" {
			out = append(out, "d "+p)
		} else {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

// writeMore changes a mounted image through the afero interface and keeps
// m in step: a new directory, files inline and CTZ, an append to an
// existing file, a cross-directory rename, a removal. A full disk may
// refuse a change (ErrNoSpace), which must then leave the tree unchanged.
func writeMore(t *testing.T, f *FS, m model, data func(p string) []byte) {
	t.Helper()
	var files []string
	for p, l := range m {
		if l != "" {
			files = append(files, p)
		}
	}
	sort.Strings(files)
	step := func(what string, err error, apply func()) {
		t.Helper()
		switch {
		case err == nil:
			apply()
		case errors.Is(err, ErrNoSpace):
			t.Logf("%s: %v", what, err)
		default:
			t.Fatalf("%s: %v", what, err)
		}
	}
	err := f.Mkdir("/zz-more", 0)
	for i := len(files) - 1; errors.Is(err, ErrNoSpace) && i >= 3; i-- {
		// A full disk: make room as a user would, by removing files.
		if err := f.Remove(files[i]); err != nil {
			t.Fatalf("remove %s on a full disk: %v", files[i], err)
		}
		delete(m, files[i])
		files = files[:i]
		err = f.Mkdir("/zz-more", 0)
	}
	step("mkdir", err, func() { m["/zz-more"] = "" })
	if _, ok := m["/zz-more"]; !ok {
		t.Fatal("no room made for /zz-more")
	}
	for i, n := range []int{0, 60, 128, 129, 4000, 20000} {
		p := fmt.Sprintf("/zz-more/n%d", i)
		b := bytes.Repeat([]byte{byte('a' + i)}, n)
		err := afero.WriteFile(f, p, b, 0)
		step("write "+p, err, func() { m[p] = fileLine(p, b) })
		if err != nil {
			// As with littlefs, the create committed; the data did not.
			m[p] = fileLine(p, nil)
		}
	}
	if len(files) > 0 {
		p := files[0]
		old, err := afero.ReadFile(f, p)
		if err != nil {
			t.Fatal(err)
		}
		add := bytes.Repeat([]byte("+appended"), 700)
		fl, err := f.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		fl.Write(add)
		step("append "+p, fl.Close(), func() { m[p] = fileLine(p, append(old, add...)) })
	}
	if len(files) > 1 {
		src, dst := files[1], "/zz-more/moved"
		line := m[src]
		step("rename "+src, f.Rename(src, dst), func() {
			delete(m, src)
			fs := strings.Fields(line)
			m[dst] = fmt.Sprintf("f %s %s %s", dst, fs[2], fs[3])
		})
	}
	if len(files) > 2 {
		p := files[2]
		step("remove "+p, f.Remove(p), func() { delete(m, p) })
	}
}

// TestReferenceImages mounts every image the reference wrote, checks every
// file and directory against the reference's own listing (order included),
// writes more, and checks again after a remount.
func TestReferenceImages(t *testing.T) {
	for _, name := range referenceImages {
		t.Run(name, func(t *testing.T) {
			dev := deviceWith(readImage(t, name))
			f, err := Mount(dev)
			if err != nil {
				t.Fatal(err)
			}
			want := readTree(t, name)
			if got := treeLines(t, f); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("tree differs from the reference's:\n%s", diffLines(want, got))
			}
			m := modelOf(want)
			writeMore(t, f, m, nil)
			if got := sortedCopy(treeLines(t, f)); strings.Join(got, "\n") != strings.Join(m.lines(), "\n") {
				t.Fatalf("after writing:\n%s", diffLines(m.lines(), got))
			}
			f2, err := Mount(dev)
			if err != nil {
				t.Fatal(err)
			}
			if got := sortedCopy(treeLines(t, f2)); strings.Join(got, "\n") != strings.Join(m.lines(), "\n") {
				t.Fatalf("after remount:\n%s", diffLines(m.lines(), got))
			}
		})
	}
}

func sharedFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "ref", "shared", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRenamesThenRewrites is the first reproduction (see
// testdata/ref/shared/README.md): two cross-directory renames by the
// reference, then 40 rewrites compacting /a. Decoding the move state by
// XORing every MOVESTATE tag of a block "completed" a phantom move and
// deleted a real file; re-encoding it on compaction lost one for the
// reference too.
func TestRenamesThenRewrites(t *testing.T) {
	dev := deviceWith(readImage(t, "renames-then-rewrites"))
	want := map[string][]byte{
		"/a/f2": sharedFile(t, "f2"), "/a/f3": sharedFile(t, "f3"), "/a/f4": sharedFile(t, "f4"),
		"/a/f5": sharedFile(t, "ow"), "/b/g0": sharedFile(t, "f0"), "/b/g1": sharedFile(t, "f1"),
	}
	check := func(f *FS) {
		t.Helper()
		for p, b := range want {
			got, err := afero.ReadFile(f, p)
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("%s: %d bytes, %v", p, len(got), err)
			}
		}
		if n := len(treeLines(t, f)); n != len(want)+2 {
			t.Fatalf("%d entries, want %d", n, len(want)+2)
		}
	}
	f, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	check(f)
	// Compact /a and /b many times over, as the firmware would.
	for i := 0; i < 60; i++ {
		b := bytes.Repeat([]byte{byte(i)}, 50+i)
		if err := afero.WriteFile(f, "/a/f5", b, 0); err != nil {
			t.Fatal(err)
		}
		want["/a/f5"] = b
		if err := afero.WriteFile(f, "/b/g1", b, 0); err != nil {
			t.Fatal(err)
		}
		want["/b/g1"] = b
	}
	check(f)
	f2, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	check(f2)
}

// TestRmdirKeepsMoveState is the second reproduction: /a/f0 moved
// into /b by the reference, so /b's pair holds a share of the move state;
// removing /b must hand that share to its predecessor (lfs_dir_drop).
func TestRmdirKeepsMoveState(t *testing.T) {
	dev := deviceWith(readImage(t, "moved-into-b"))
	f, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Remove("/b/g0"); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove("/b"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // remount, write, remount
		f, err = Mount(dev)
		if err != nil {
			t.Fatal(err)
		}
		got := treeLines(t, f)
		want := []string{"d /a", fileLine("/a/f1", sharedFile(t, "rmdir-f1"))}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("pass %d: tree %q, want %q", i, got, want)
		}
		if err := afero.WriteFile(f, "/a/f1", sharedFile(t, "rmdir-f1"), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFormatIsBitIdentical compares Format with lfs_format of the
// reference (v2.1.4 and v2.4 write the same 256 KiB image): the same two
// compactions of the superblock pair, byte for byte.
func TestFormatIsBitIdentical(t *testing.T) {
	want := readImage(t, "format-64")
	dev := flash.NewMemory(int64(len(want)))
	if err := Format(dev); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	dev.ReadAt(got, 0)
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("image differs from lfs_format's at byte %#x: %#02x, want %#02x", i, got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	if len(b) > len(a) {
		return len(a)
	}
	return -1
}
