package fs

import (
	"errors"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
)

// TestCorruptImages checks that damaged images are reported as corrupt:
// a directory pointing back at the root, a metadata list looping on
// itself, a superblock of another disk version, a wiped root pair.
func TestCorruptImages(t *testing.T) {
	build := func(t *testing.T, damage func(f *FS)) flash.Device {
		dev := flash.NewMemory(32 * BlockSize)
		if err := Format(dev); err != nil {
			t.Fatal(err)
		}
		f, _ := Mount(dev)
		f.Mkdir("/a", 0)
		f.Mkdir("/a/b", 0)
		damage(f)
		return dev
	}
	tests := []struct {
		name   string
		damage func(f *FS)
	}{
		{"dir-points-at-root", func(f *FS) {
			a := f.dirAt(f.root.entries[1].child).pairs[0]
			a.entries[0].child = f.root.blocks
			f.commit(a)
		}},
		{"dir-points-at-parent", func(f *FS) {
			a := f.dirAt(f.root.entries[1].child).pairs[0]
			a.entries[0].child = f.root.entries[1].child
			f.commit(a)
		}},
		{"tail-loop", func(f *FS) {
			last := f.chain[len(f.chain)-1]
			last.tail = f.chain[1].blocks
			f.commit(last)
		}},
		{"disk-version-2.1", func(f *FS) {
			f.root.entries[0].sbData[0] = 1 // minor version 1
			f.commit(f.root)
		}},
		{"root-pair-erased", func(f *FS) {
			f.dev.Erase(0, 2*BlockSize)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := build(t, tc.damage)
			if _, err := Mount(dev); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("mount: %v, want ErrCorrupt", err)
			}
		})
	}
}
