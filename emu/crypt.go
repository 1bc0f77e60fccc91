package emu

import (
	"fmt"
	"path/filepath"

	"github.com/mosemu/mosemu/efuse"
	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/flashenc"
	"github.com/mosemu/mosemu/emu/partition"
)

// efuseKeys adapts the efuses to flashenc.KeySource: the engine reads the
// key and FLASH_CRYPT_CONFIG from the efuses on every access, so burning
// them takes effect at once, as after the hardware's efuse reload.
type efuseKeys struct{ ef *efuse.Efuses }

func (k efuseKeys) FlashKey() (bool, [32]byte, uint8) {
	return k.ef.EncryptionEnabled(), k.ef.FlashEncryptionKey(), k.ef.FlashCryptConfig()
}

// cryptView returns the CPU's view of the flash through the encryption
// engine, or nil on a board without one.
func (d *Device) cryptView() flash.Device {
	if d.efuses == nil {
		return nil
	}
	if d.crypt == nil {
		d.crypt = flashenc.NewView(d.flash, efuseKeys{d.efuses})
	}
	return d.crypt
}

func (d *Device) efusePath() string { return filepath.Join(d.opts.StateDir, EfuseFile) }

// bootloaderEncrypt does what the ESP-IDF bootloader built with flash
// encryption does when it finds FLASH_CRYPT_CNT even: generate and burn a
// key (unless one is burned already), set FLASH_CRYPT_CONFIG to 0xF,
// encrypt the bootloader, the partition table and every app or encrypted
// partition in place, then burn the next FLASH_CRYPT_CNT bit and protect
// the key. Later boots find the count odd and boot normally.
func (d *Device) bootloaderEncrypt() error {
	if d.efuses == nil || !d.id.FlashEncryption || d.efuses.EncryptionEnabled() {
		return nil
	}
	ef := d.efuses
	log := d.log.With(console.Src("flash_encrypt.c", 60))
	log.Info("Flash encryption is enabled in the bootloader but not yet in the efuses: encrypting flash")
	if err := ef.GenerateKeyIfUnset(); err != nil {
		return fmt.Errorf("boot: flash encryption: %w", err)
	}
	if err := ef.Burn("FLASH_CRYPT_CONFIG", 0xF); err != nil {
		return fmt.Errorf("boot: flash encryption: %w", err)
	}
	c, err := flashenc.NewCipher(ef.FlashEncryptionKey(), ef.FlashCryptConfig())
	if err != nil {
		return err
	}
	raw := make([]byte, partition.TableSize)
	if _, err := d.flash.ReadAt(raw, partition.Offset); err != nil {
		return err
	}
	table, err := partition.Parse(raw)
	if err != nil {
		return fmt.Errorf("boot: flash encryption: cannot read the plaintext partition table: %w", err)
	}
	type region struct {
		name     string
		off, len int64
	}
	regions := []region{{"bootloader", 0x1000, 0x7000}, {"partition table", partition.Offset, partition.SectorSize}}
	for _, p := range table {
		if p.Type == partition.TypeApp || p.Encrypted() {
			regions = append(regions, region{p.Label, int64(p.Offset), int64(p.Size)})
		}
	}
	for i, r := range regions {
		log.Info(fmt.Sprintf("Encrypting %s at 0x%x (0x%x bytes)", r.name, r.off, r.len))
		// Data partitions are encrypted whole; code only where written.
		blank := i >= 2 && isDataPartition(table, r.off)
		if err := flashenc.EncryptInPlace(d.flash, c, r.off, r.len, blank); err != nil {
			return fmt.Errorf("boot: encrypting %s: %w", r.name, err)
		}
	}
	if err := ef.EnableFlashEncryption(); err != nil { // next FLASH_CRYPT_CNT bit, key RD/WR protection
		return fmt.Errorf("boot: flash encryption: %w", err)
	}
	if err := ef.Save(d.efusePath()); err != nil {
		return err
	}
	log.Info("Flash encryption completed")
	return nil
}

func isDataPartition(t partition.Table, off int64) bool {
	for _, p := range t {
		if int64(p.Offset) == off {
			return p.Type == partition.TypeData
		}
	}
	return false
}

// SetBootloaderFlashEncryption marks the device's bootloader as built with
// (or without) flash encryption, as flashing such a bootloader would. With
// it, the next boot that finds FLASH_CRYPT_CNT even encrypts the flash.
func (d *Device) SetBootloaderFlashEncryption(on bool) error {
	if d.efuses == nil && on {
		return fmt.Errorf("emu: %s has no flash encryption", d.board.Arch)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.id.FlashEncryption = on
	return saveIdentity(d.opts.StateDir, d.id)
}
