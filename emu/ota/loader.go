package ota

import (
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/partition"
)

// Loader is a boot loader other than the ESP32's 2nd stage (otadata and
// esp_image_format): rBoot on the ESP8266. With Env.Loader set, the
// updater reads and writes the boot slot and checks app images through it.
type Loader interface {
	// BootSlot returns the slot the loader boots, of n.
	BootSlot(n int) (int, bool)
	// SetBootSlot makes slot the one booted, as a committed firmware.
	SetBootSlot(slot, n int) error
	// Updated records a finished update: boot newSlot once, unconfirmed,
	// with oldSlot to fall back to.
	Updated(oldSlot, newSlot int) error
	// Tombstone makes the next boot use oldSlot unless the running first
	// boot of an update commits (the loader may do that itself).
	Tombstone(oldSlot, n int) error
	// Verify checks the app image in dev (limit bytes) as the loader does.
	Verify(dev flash.Device, limit int64) (ImageInfo, error)
}

// verify checks an app image with the loader's rules.
func (env Env) verify(dev flash.Device, limit int64) (ImageInfo, error) {
	if env.Loader != nil {
		return env.Loader.Verify(dev, limit)
	}
	return VerifyImage(dev, limit)
}

// Table returns the partitions the updater works on (for a Loader, the
// slots it describes).
func (b *Boot) Table() partition.Table { return b.env.Table }
