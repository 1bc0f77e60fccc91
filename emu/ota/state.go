package ota

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/mosemu/mosemu/internal/atomicfile"
)

// Status is the update status word the ESP32 updater keeps in NVS
// (namespace "mgos", key "update"): old slot in bits 0-3, new slot in bits
// 4-7, "first boot" (uncommitted) 0x100 and "merge fs" 0x200.
type Status uint32

// Status flag bits.
const (
	FlagFirstBoot Status = 0x100
	FlagMergeFS   Status = 0x200
)

// MakeStatus packs a status word.
func MakeStatus(oldSlot, newSlot int, firstBoot, mergeFS bool) Status {
	s := Status(oldSlot&0xF) | Status(newSlot&0xF)<<4
	if firstBoot {
		s |= FlagFirstBoot
	}
	if mergeFS {
		s |= FlagMergeFS
	}
	return s
}

// OldSlot is the slot to revert to.
func (s Status) OldSlot() int { return int(s & 0xF) }

// NewSlot is the slot of the update.
func (s Status) NewSlot() int { return int(s>>4) & 0xF }

// FirstBoot reports an uncommitted update.
func (s Status) FirstBoot() bool { return s&FlagFirstBoot != 0 }

// MergeFS reports that the old filesystem is still to be merged into the new.
func (s Status) MergeFS() bool { return s&FlagMergeFS != 0 }

func (s Status) String() string { return fmt.Sprintf("%08x", uint32(s)) }

// SlotInfo is the identity of the firmware written to a slot by an update,
// taken from the bundle's manifest, and the digest of the app image it
// belongs to (so an image written by other means is not mistaken for it).
type SlotInfo struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	BuildID   string `json:"build_id"`
	ImageSize int    `json:"image_size"`
	ImageSHA1 string `json:"image_sha1"`
}

// Record is what the updater persists outside the filesystem.
type Record struct {
	Update Status `json:"update"`
	// OldFS is the type and options of the old root filesystem
	// (NVS key "update_old_fs").
	OldFS string              `json:"update_old_fs,omitempty"`
	Slots map[string]SlotInfo `json:"slots,omitempty"`
}

// Store keeps the Record in a file of the device's state directory,
// replaced atomically: the emulator's stand-in for the NVS partition.
type Store struct {
	Path string
	mu   sync.Mutex
}

// Load reads the record; a missing file is an empty record (no update has
// taken place yet).
func (s *Store) Load() (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load()
}

func (s *Store) load() (Record, error) {
	var r Record
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("%s: %w", s.Path, err)
	}
	return r, nil
}

// Update applies f to the stored record and writes it back.
func (s *Store) Update(f func(r *Record)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.load()
	if err != nil {
		r = Record{} // a corrupt record reads as "no update", as a blank NVS would
	}
	f(&r)
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.Path, append(b, '\n'))
}
