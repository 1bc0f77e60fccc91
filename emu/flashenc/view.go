package flashenc

import (
	"fmt"

	"github.com/mosemu/mosemu/emu/flash"
)

// KeySource reports, at each access, whether flash encryption is on and
// with which key and FLASH_CRYPT_CONFIG (the efuses can change at runtime).
type KeySource interface {
	FlashKey() (enabled bool, key [32]byte, config uint8)
}

// View is a flash.Device seen through the encryption engine, as the CPU
// sees flash through its cache: reads decrypt, writes encrypt. When the
// source says encryption is off it is transparent.
type View struct {
	raw flash.Device
	src KeySource

	cipher    *Cipher
	cipherKey [32]byte
	cipherCfg uint8
}

// NewView returns the encrypted view of raw.
func NewView(raw flash.Device, src KeySource) *View { return &View{raw: raw, src: src} }

func (v *View) engine() *Cipher {
	on, key, cfg := v.src.FlashKey()
	if !on {
		return nil
	}
	if v.cipher == nil || key != v.cipherKey || cfg != v.cipherCfg {
		v.cipher, _ = NewCipher(key, cfg)
		v.cipherKey, v.cipherCfg = key, cfg
	}
	return v.cipher
}

// Size implements flash.Device.
func (v *View) Size() int64 { return v.raw.Size() }

// ReadAt decrypts; any offset and length work.
func (v *View) ReadAt(p []byte, off int64) (int, error) {
	c := v.engine()
	if c == nil {
		return v.raw.ReadAt(p, off)
	}
	start := off &^ 15
	end := (off + int64(len(p)) + 15) &^ 15
	buf := make([]byte, end-start)
	if _, err := v.raw.ReadAt(buf, start); err != nil {
		return 0, err
	}
	if err := c.Decrypt(buf, buf, uint32(start)); err != nil {
		return 0, err
	}
	return copy(p, buf[off-start:]), nil
}

// WriteAt encrypts then programs; like the hardware it needs 16-byte
// aligned offsets and lengths.
func (v *View) WriteAt(p []byte, off int64) (int, error) {
	c := v.engine()
	if c == nil {
		return v.raw.WriteAt(p, off)
	}
	if off%16 != 0 || len(p)%16 != 0 {
		return 0, fmt.Errorf("%w: encrypted write of %d bytes at %#x", ErrAlignment, len(p), off)
	}
	buf := make([]byte, len(p))
	if err := c.Encrypt(buf, p, uint32(off)); err != nil {
		return 0, err
	}
	return v.raw.WriteAt(buf, off)
}

// Erase implements flash.Device.
func (v *View) Erase(off, n int64) error { return v.raw.Erase(off, n) }

// EncryptInPlace encrypts [off, off+n) of raw, sector by sector (erase,
// then program the ciphertext), as the bootloader does on first boot.
// Blank sectors are encrypted too when encryptBlank, else left erased.
func EncryptInPlace(raw flash.Device, c *Cipher, off, n int64, encryptBlank bool) error {
	buf := make([]byte, flash.SectorSize)
	for s := off; s < off+n; s += flash.SectorSize {
		if _, err := raw.ReadAt(buf, s); err != nil {
			return err
		}
		if !encryptBlank && isErased(buf) {
			continue
		}
		if err := c.Encrypt(buf, buf, uint32(s)); err != nil {
			return err
		}
		if err := raw.Erase(s, flash.SectorSize); err != nil {
			return err
		}
		if _, err := raw.WriteAt(buf, s); err != nil {
			return err
		}
	}
	return nil
}

func isErased(b []byte) bool {
	for _, x := range b {
		if x != 0xFF {
			return false
		}
	}
	return true
}
