package emu

import "github.com/mosemu/mosemu/emu/flash"

// cryptView returns the CPU's view of the flash through the encryption
// engine, or nil when the board has none.
func (d *Device) cryptView() flash.Device { return nil }

// bootloaderEncrypt performs first-boot flash encryption; boards without
// an efuse controller have nothing to do.
func (d *Device) bootloaderEncrypt() error { return nil }
