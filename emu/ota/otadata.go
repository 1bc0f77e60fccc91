package ota

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/mosemu/mosemu/emu/flash"
)

// otadata entry layout (esp_ota_select_entry_t): ota_seq, seq_label[20],
// ota_state, crc (CRC-32 of ota_seq as the ROM's crc32_le(UINT32_MAX, ...)
// computes it). The partition holds two entries, one per sector.
const (
	otaEntrySize   = 32
	otaStateUndef  = 0xFFFFFFFF // ESP_OTA_IMG_UNDEFINED: app rollback is off
	otaSectorCount = 2
)

func otaSeqCRC(seq uint32) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], seq)
	return crc32.Update(0xFFFFFFFF, crc32.IEEETable, b[:])
}

type otaEntry struct {
	seq   uint32
	valid bool
}

func readOTAEntries(dev flash.Device) [otaSectorCount]otaEntry {
	var es [otaSectorCount]otaEntry
	for i := range es {
		b := make([]byte, otaEntrySize)
		if _, err := dev.ReadAt(b, int64(i)*flash.SectorSize); err != nil {
			continue
		}
		seq := binary.LittleEndian.Uint32(b)
		crc := binary.LittleEndian.Uint32(b[28:])
		es[i] = otaEntry{seq: seq, valid: seq != 0xFFFFFFFF && crc == otaSeqCRC(seq)}
	}
	return es
}

// active returns the index of the entry with the highest valid sequence
// number, or -1 when neither is valid (bootloader_common_get_active_otadata).
func active(es [otaSectorCount]otaEntry) int {
	switch {
	case es[0].valid && es[1].valid:
		if es[1].seq > es[0].seq {
			return 1
		}
		return 0
	case es[0].valid:
		return 0
	case es[1].valid:
		return 1
	}
	return -1
}

// BootSlot returns the OTA slot the 2nd-stage bootloader selects from the
// otadata partition dev (seen through the encryption engine when it is
// encrypted), among slots app slots; ok is false when otadata is blank or
// invalid, in which case the bootloader boots slot 0 (the first OTA app).
func BootSlot(dev flash.Device, slots int) (slot int, ok bool) {
	es := readOTAEntries(dev)
	i := active(es)
	if i < 0 || slots <= 0 {
		return 0, false
	}
	return int((es[i].seq - 1) % uint32(slots)), true
}

// SetBootSlot records slot as the one to boot, as esp_ota_set_boot_partition
// does: the inactive otadata sector gets the next sequence number whose
// (seq-1) mod slots is slot.
func SetBootSlot(dev flash.Device, slot, slots int) error {
	es := readOTAEntries(dev)
	var seq uint32
	sector := 0
	if i := active(es); i >= 0 {
		n := uint32(0)
		for es[i].seq > uint32(slot+1)%uint32(slots)+n*uint32(slots) {
			n++
		}
		seq = uint32(slot+1)%uint32(slots) + n*uint32(slots)
		sector = i ^ 1
	} else {
		seq = uint32(slot + 1)
	}
	b := make([]byte, otaEntrySize)
	for j := 4; j < 24; j++ {
		b[j] = 0xFF // seq_label unused
	}
	binary.LittleEndian.PutUint32(b, seq)
	binary.LittleEndian.PutUint32(b[24:], otaStateUndef)
	binary.LittleEndian.PutUint32(b[28:], otaSeqCRC(seq))
	off := int64(sector) * flash.SectorSize
	if err := dev.Erase(off, flash.SectorSize); err != nil {
		return err
	}
	_, err := dev.WriteAt(b, off)
	return err
}
