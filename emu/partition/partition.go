// Package partition reads and writes the ESP32 partition table: 32-byte
// entries at flash offset 0x8000, an optional MD5 entry, then 0xFF.
package partition

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Offset is where the partition table lives in flash; TableSize is the area
// it may occupy and SectorSize the flash sector that holds it.
const (
	Offset     = 0x8000
	TableSize  = 0xC00
	SectorSize = 0x1000
	entrySize  = 32
)

// Partition types and the subtypes Mongoose OS uses.
const (
	TypeApp  = 0x00
	TypeData = 0x01

	SubFactory = 0x00
	SubOTA0    = 0x10
	SubOTA1    = 0x11
	SubOTAData = 0x00
	SubPHY     = 0x01
	SubNVS     = 0x02
	SubFAT     = 0x81
	SubSPIFFS  = 0x82

	FlagEncrypted = 1 << 0
)

var (
	magicEntry = []byte{0xAA, 0x50}
	magicMD5   = []byte{0xEB, 0xEB}
)

// Entry is one partition.
type Entry struct {
	Type    uint8
	Subtype uint8
	Offset  uint32
	Size    uint32
	Label   string
	Flags   uint32
}

// Encrypted reports whether the partition carries the "encrypted" flag.
func (e Entry) Encrypted() bool { return e.Flags&FlagEncrypted != 0 }

// Table is a parsed partition table.
type Table []Entry

// Errors returned by Parse.
var (
	ErrEmpty   = errors.New("partition table is empty")
	ErrBadMD5  = errors.New("partition table MD5 mismatch")
	ErrCorrupt = errors.New("partition table is corrupt")
)

// Parse decodes a partition table from the bytes at Offset (at least the
// first entries; a whole TableSize area is typical).
func Parse(b []byte) (Table, error) {
	var t Table
	for off := 0; off+entrySize <= len(b) && off < TableSize; off += entrySize {
		e := b[off : off+entrySize]
		switch {
		case bytes.HasPrefix(e, magicEntry):
			label := e[12:28]
			if i := bytes.IndexByte(label, 0); i >= 0 {
				label = label[:i]
			}
			t = append(t, Entry{
				Type:    e[2],
				Subtype: e[3],
				Offset:  binary.LittleEndian.Uint32(e[4:]),
				Size:    binary.LittleEndian.Uint32(e[8:]),
				Label:   string(label),
				Flags:   binary.LittleEndian.Uint32(e[28:]),
			})
		case bytes.HasPrefix(e, magicMD5):
			sum := md5.Sum(b[:off])
			if !bytes.Equal(sum[:], e[16:32]) {
				return nil, fmt.Errorf("%w: stored %x, computed %x", ErrBadMD5, e[16:32], sum)
			}
			return t, t.validate()
		case bytes.Equal(e, bytes.Repeat([]byte{0xFF}, entrySize)):
			if len(t) == 0 {
				return nil, ErrEmpty
			}
			return t, t.validate()
		default:
			return nil, fmt.Errorf("%w: bad magic %x in entry %d", ErrCorrupt, e[:2], off/entrySize)
		}
	}
	if len(t) == 0 {
		return nil, ErrEmpty
	}
	return t, t.validate()
}

func (t Table) validate() error {
	for i, e := range t {
		if e.Size == 0 || uint64(e.Offset)+uint64(e.Size) > 1<<32 {
			return fmt.Errorf("%w: partition %q has bad bounds", ErrCorrupt, e.Label)
		}
		for _, o := range t[:i] {
			if e.Offset < o.Offset+o.Size && o.Offset < e.Offset+e.Size {
				return fmt.Errorf("%w: partitions %q and %q overlap", ErrCorrupt, o.Label, e.Label)
			}
		}
	}
	return nil
}

// Marshal encodes the table followed by the MD5 entry and 0xFF padding up to
// SectorSize bytes, as gen_esp32part.py does with MD5 enabled.
func (t Table) Marshal() ([]byte, error) {
	if (len(t)+2)*entrySize > TableSize {
		return nil, fmt.Errorf("partition table: %d entries do not fit", len(t))
	}
	var b []byte
	for _, e := range t {
		if len(e.Label) > 16 {
			return nil, fmt.Errorf("partition table: label %q longer than 16 bytes", e.Label)
		}
		var ent [entrySize]byte
		copy(ent[:], magicEntry)
		ent[2], ent[3] = e.Type, e.Subtype
		binary.LittleEndian.PutUint32(ent[4:], e.Offset)
		binary.LittleEndian.PutUint32(ent[8:], e.Size)
		copy(ent[12:28], e.Label)
		binary.LittleEndian.PutUint32(ent[28:], e.Flags)
		b = append(b, ent[:]...)
	}
	sum := md5.Sum(b)
	b = append(b, magicMD5...)
	b = append(b, bytes.Repeat([]byte{0xFF}, 14)...)
	b = append(b, sum[:]...)
	return append(b, bytes.Repeat([]byte{0xFF}, SectorSize-len(b))...), nil
}

// Find returns the first partition with the label, or false.
func (t Table) Find(label string) (Entry, bool) {
	for _, e := range t {
		if e.Label == label {
			return e, true
		}
	}
	return Entry{}, false
}

// RootFS returns the partition the firmware mounts as its root filesystem:
// the one labelled "fs" (current Mongoose OS) or "fs_0" (2.x), else the first
// SPIFFS-subtype data partition.
func (t Table) RootFS() (Entry, bool) {
	for _, l := range []string{"fs", "fs_0"} {
		if e, ok := t.Find(l); ok {
			return e, true
		}
	}
	for _, e := range t {
		if e.Type == TypeData && e.Subtype == SubSPIFFS {
			return e, true
		}
	}
	return Entry{}, false
}

// String renders the table like gen_esp32part.py's CSV output.
func (t Table) String() string {
	var sb strings.Builder
	sb.WriteString("# Name, Type, SubType, Offset, Size, Flags\n")
	for _, e := range t {
		flags := ""
		if e.Encrypted() {
			flags = "encrypted"
		}
		fmt.Fprintf(&sb, "%s,%d,%#02x,%#x,%#x,%s\n", e.Label, e.Type, e.Subtype, e.Offset, e.Size, flags)
	}
	return sb.String()
}

// DefaultESP32 is the Mongoose OS partition layout for a 4 MiB ESP32
// (platforms/esp32xx/partitions_mgos.csv, current tree, LFS root filesystem).
func DefaultESP32() Table {
	return Table{
		{Type: TypeData, Subtype: SubNVS, Offset: 0x9000, Size: 0x4000, Label: "nvs"},
		{Type: TypeData, Subtype: SubOTAData, Offset: 0xD000, Size: 0x2000, Label: "otadata", Flags: FlagEncrypted},
		{Type: TypeApp, Subtype: SubOTA0, Offset: 0x10000, Size: 0x180000, Label: "app_0", Flags: FlagEncrypted},
		{Type: TypeData, Subtype: SubSPIFFS, Offset: 0x190000, Size: 0x40000, Label: "fs_0", Flags: FlagEncrypted},
		{Type: TypeApp, Subtype: SubOTA1, Offset: 0x1D0000, Size: 0x180000, Label: "app_1", Flags: FlagEncrypted},
		{Type: TypeData, Subtype: SubSPIFFS, Offset: 0x350000, Size: 0x40000, Label: "fs_1", Flags: FlagEncrypted},
	}
}
