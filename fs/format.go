// Package fs is the device's root filesystem: LittleFS v2 (on-disk version
// 2.0, block size 4096) living in the flash "fs" partition, exposed as an
// afero.Fs. Every byte goes through the emulated flash, so a raw flash dump
// shows the files (or their ciphertext when flash encryption is on).
//
// The format is that of the firmware's littlefs (v2.1.4 / v2.4 as vendored
// by mongoose-os-libs/vfs-fs-lfs) with the geometry mgos_vfs_lfs.c gives the
// ESP32 root fs; images either side writes read the same on the other (see
// reference_test.go and reverse_test.go for how that is checked).
package fs

import (
	"encoding/binary"
	"hash/crc32"
	"math/bits"
)

// On-disk constants of the littlefs v2 format (littlefs SPEC.md).
const (
	BlockSize   = 4096
	progSize    = 128 // read = prog size of the root fs ({"bs":4096,"is":128}): commits are padded to it
	diskVersion = 0x00020000
	nameMax     = 255
	fileMax     = 0x7FFFFFFF
	attrMax     = 1022
	inlineMax   = 128 // files up to min(cache 128, block/8, 0x3fe) bytes live in their directory's metadata
	blockCycles = 512 // mgos_vfs_lfs.c: erase cycles before a pair is moved
	null        = 0xFFFFFFFF
	magic       = "littlefs"

	typeReg        = 0x001
	typeDir        = 0x002
	typeSuperblock = 0x0FF
	typeCreate     = 0x401
	typeDelete     = 0x4FF
	typeDirStruct  = 0x200
	typeInline     = 0x201
	typeCTZ        = 0x202
	typeUserAttr   = 0x300
	typeSoftTail   = 0x600
	typeHardTail   = 0x601
	typeMoveState  = 0x7FF
	typeCCRC       = 0x500
	typeFCRC       = 0x5FF
	idNone         = 0x3FF
	sizeDeleted    = 0x3FF
)

// crc is littlefs's CRC-32 (polynomial 0x04c11db7 reflected, init 0xffffffff,
// no final inversion), expressed through the standard IEEE table.
func crc(c uint32, p []byte) uint32 { return ^crc32.Update(^c, crc32.IEEETable, p) }

// tag is a decoded 32-bit metadata tag: valid bit, 11-bit type, 10-bit id,
// 10-bit length.
type tag uint32

func mkTag(typ, id, size uint32) tag { return tag(typ<<20 | id<<10 | size) }

func (t tag) valid() bool  { return t&0x80000000 == 0 }
func (t tag) typ3() uint32 { return uint32(t>>20) & 0x7FF }
func (t tag) typ1() uint32 { return uint32(t>>20) & 0x700 }
func (t tag) chunk() uint8 { return uint8(t >> 20) }
func (t tag) id() uint32   { return uint32(t>>10) & 0x3FF }
func (t tag) size() uint32 { return uint32(t) & 0x3FF }
func (t tag) deleted() bool {
	return t.size() == sizeDeleted
}

// dsize is the bytes the tag and its data occupy in a commit.
func (t tag) dsize() uint32 {
	if t.deleted() {
		return 4
	}
	return 4 + t.size()
}

// ctzCap is the data capacity of block i of a CTZ skip-list: block 0 holds
// only data, block i>0 starts with ctz(i)+1 back pointers.
func ctzCap(i int) int {
	if i == 0 {
		return BlockSize
	}
	return BlockSize - 4*(bits.TrailingZeros(uint(i))+1)
}

// ctzBlocks is the number of blocks a file of size bytes occupies.
func ctzBlocks(size int) int {
	n := 0
	for left := size; left > 0; n++ {
		left -= ctzCap(n)
	}
	return n
}

// ctzOffset returns the block index holding file offset off and the offset
// of that byte within the block.
func ctzOffset(off int) (int, int) {
	i := 0
	for off >= ctzCap(i) {
		off -= ctzCap(i)
		i++
	}
	return i, BlockSize - ctzCap(i) + off
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// seqLess compares revision counts with sequence arithmetic.
func seqLess(a, b uint32) bool { return int32(a-b) < 0 }
