package emu

import (
	"fmt"
	"path/filepath"

	"github.com/mosemu/mosemu/efuse"
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
// the key, and reset (errEncryptionDone). With encryption on it reports
// the plaintext flashes left. Every burn is on disk before the next step,
// as real efuses are permanent the moment they are burnt: a power cut in
// the middle leaves the key burnt and the flash half encrypted.
func (d *Device) bootloaderEncrypt(l *idfLog, table partition.Table) error {
	if d.efuses == nil {
		return nil
	}
	ef := d.efuses
	if ef.EncryptionEnabled() {
		l.info("flash_encrypt", "flash encryption is enabled (%d plaintext flashes left)", d.plaintextFlashesLeft())
		return nil
	}
	if !d.id.FlashEncryption {
		return nil
	}
	burn := func(f func() error) error {
		if err := f(); err != nil {
			return fmt.Errorf("boot: flash encryption: %w", err)
		}
		return ef.Save(d.efusePath())
	}
	if ef.FlashEncryptionKey() == [32]byte{} {
		l.info("flash_encrypt", "Generating new flash encryption key...")
	} else {
		l.info("flash_encrypt", "Using pre-loaded flash encryption key in EFUSE block 1")
	}
	if err := burn(ef.GenerateKeyIfUnset); err != nil {
		return err
	}
	if ef.FlashCryptConfig() != 0xF {
		l.info("flash_encrypt", "Setting CRYPT_CONFIG efuse to 0xF")
		if err := burn(func() error { return ef.Burn("FLASH_CRYPT_CONFIG", 0xF) }); err != nil {
			return err
		}
	}
	c, err := flashenc.NewCipher(ef.FlashEncryptionKey(), ef.FlashCryptConfig())
	if err != nil {
		return err
	}
	type region struct {
		name     string
		off, len int64
		blank    bool // data partitions are encrypted whole, code only where written
	}
	regions := []region{{"bootloader", 0x1000, 0x7000, false}, {"partition table", partition.Offset, partition.SectorSize, false}}
	for _, p := range table {
		if p.Type == partition.TypeApp || p.Encrypted() {
			regions = append(regions, region{p.Label, int64(p.Offset), int64(p.Size), p.Type == partition.TypeData})
		}
	}
	for i, r := range regions {
		if d.encryptHook != nil {
			d.encryptHook(r.name)
		}
		switch i {
		case 0:
			l.info("flash_encrypt", "Encrypting bootloader...")
		case 1:
			l.info("flash_encrypt", "Encrypting partition table...")
		default:
			l.info("flash_encrypt", "Encrypting partition %d at offset 0x%x (length 0x%x)...", i-2, r.off, r.len)
		}
		if err := flashenc.EncryptInPlace(d.flash, c, r.off, r.len, r.blank); err != nil {
			return fmt.Errorf("boot: encrypting %s: %w", r.name, err)
		}
		if i == 0 {
			l.info("flash_encrypt", "bootloader encrypted successfully")
		}
		if i == 1 {
			l.info("flash_encrypt", "partition table encrypted and loaded successfully")
		}
	}
	if err := d.flash.Sync(); err != nil {
		return err
	}
	l.info("flash_encrypt", "Done encrypting")
	if err := burn(ef.EnableFlashEncryption); err != nil { // next FLASH_CRYPT_CNT bit, key RD/WR protection
		return err
	}
	l.info("flash_encrypt", "Flash encryption completed")
	l.info("boot", "Resetting with flash encryption enabled...")
	return errEncryptionDone
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
