package emu

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mosemu/mosemu/internal/atomicfile"
)

// State file names inside a device's state directory.
const (
	StateFile = "device.json" // identity: arch, seed, boot options
	FlashFile = "flash.bin"   // sparse SPI flash image (bytes stored inverted)
	EfuseFile = "efuse.bin"   // ESP32 efuses, espressif QEMU 124-byte layout
	ATCAFile  = "atca.json"   // ATECC608A zones and locks
)

// Identity is what makes a device itself across restarts.
type Identity struct {
	Arch string `json:"arch"`
	// Seed derives the factory MAC, the ATECC serial number and other
	// per-unit values, so that devices of a fleet differ.
	Seed uint64 `json:"seed"`
	// FlashEncryption is true when the bootloader on this device was built
	// with flash encryption enabled: a boot with FLASH_CRYPT_CNT even
	// encrypts the flash in place and burns the efuses.
	FlashEncryption bool `json:"flash_encryption,omitempty"`
	// Wiring is how parts sit on the board's GPIOs (nil: DefaultWiring).
	Wiring []Wire `json:"wiring,omitempty"`
}

// loadIdentity reads dir/device.json, creating the directory and the file
// for a new device from def.
func loadIdentity(dir string, def Identity) (Identity, bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Identity{}, false, err
	}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		if def.Seed == 0 {
			var s [8]byte
			rand.Read(s[:])
			def.Seed = binary.LittleEndian.Uint64(s[:])
		}
		if err := atomicfile.Write(filepath.Join(dir, StateFile), mustJSON(def)); err != nil {
			return Identity{}, false, err
		}
		return def, true, nil
	}
	if err != nil {
		return Identity{}, false, err
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return Identity{}, false, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	if _, err := BoardFor(id.Arch); err != nil {
		return Identity{}, false, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return id, false, nil
}

func saveIdentity(dir string, id Identity) error {
	return atomicfile.Write(filepath.Join(dir, StateFile), mustJSON(id))
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}
