package emu

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/ota"
	"github.com/mosemu/mosemu/emu/partition"
	"github.com/mosemu/mosemu/emu/rboot"
)

// The ESP8266 updater (platforms/esp8266/src/esp_updater.c) on rBoot: the
// app image goes to the slot not running (roms[] of the rBoot config), the
// fs image to that slot's filesystem (fs_addr[]), and the config's
// current_rom / previous_rom / is_first_boot / fw_updated fields make rBoot
// boot the new slot once; commit and revert rewrite them. The update
// status itself is kept as on the ESP32 (ota.json).

// rbootLoader is the ota.Loader of an ESP8266: the rBoot config sector.
type rbootLoader struct{ d *Device }

func (l rbootLoader) read() ([]byte, rboot.Config, error) {
	sector := make([]byte, rboot.SectorSize)
	if _, err := l.d.flash.ReadAt(sector, rboot.ConfigAddr); err != nil {
		return nil, rboot.Config{}, err
	}
	c, err := rboot.ParseConfig(sector)
	return sector, c, err
}

// BootSlot returns rBoot's current_rom.
func (l rbootLoader) BootSlot(n int) (int, bool) {
	_, c, err := l.read()
	if err != nil || int(c.CurrentROM) >= n {
		return 0, false
	}
	return int(c.CurrentROM), true
}

// SetBootSlot selects slot as a confirmed boot (commit, revert, tombstone).
func (l rbootLoader) SetBootSlot(slot, _ int) error {
	sector, c, err := l.read()
	if err != nil {
		return err
	}
	c.CurrentROM, c.IsFirstBoot, c.BootAttempts, c.FWUpdated = uint8(slot), 0, 0, 0
	return l.d.writeRBootConfig(sector, c)
}

// Updated makes rBoot boot newSlot once, falling back to oldSlot if that
// boot fails before the firmware commits.
func (l rbootLoader) Updated(oldSlot, newSlot int) error {
	sector, c, err := l.read()
	if err != nil {
		return err
	}
	c.PreviousROM, c.CurrentROM = uint8(oldSlot), uint8(newSlot)
	c.IsFirstBoot, c.BootAttempts, c.FWUpdated = 1, 0, 1
	return l.d.writeRBootConfig(sector, c)
}

// Tombstone leaves a first boot of rBoot's (is_first_boot, boot_attempts
// counted, previous_rom = oldSlot) as it is: rBoot falls back to
// previous_rom by itself on the next boot unless the firmware commits.
// Anything else points rBoot at oldSlot.
func (l rbootLoader) Tombstone(oldSlot, n int) error {
	_, c, err := l.read()
	if err != nil {
		return err
	}
	if c.IsFirstBoot != 0 && c.BootAttempts != 0 && int(c.PreviousROM) == oldSlot {
		return nil
	}
	return l.SetBootSlot(oldSlot, n)
}

// updatePending reports that the updater's record holds an update not
// committed yet: its first boot is left to the updater, not committed
// when the app comes up.
func (d *Device) updatePending() bool {
	rec, err := (&ota.Store{Path: filepath.Join(d.opts.StateDir, OTAFile)}).Load()
	return err == nil && rec.Update.FirstBoot()
}

// Verify checks an ESP8266 app image as rBoot's check_image does.
func (l rbootLoader) Verify(dev flash.Device, limit int64) (ota.ImageInfo, error) {
	c, err := rboot.Check(dev, 0, true)
	if err != nil {
		return ota.ImageInfo{}, fmt.Errorf("invalid ESP8266 app image: %w", err)
	}
	if !c.V2 {
		return ota.ImageInfo{}, errors.New("invalid ESP8266 app image: not an rBoot (v2) app image")
	}
	n := int64(c.RunAddr) + 8
	for _, s := range c.Segments {
		n += 8 + int64(s.Len)
	}
	n = (n + 1 + 15) &^ 15 // the checksum ends the 16-byte block
	if n > limit {
		return ota.ImageInfo{}, fmt.Errorf("invalid ESP8266 app image: %d bytes do not fit the %d-byte slot", n, limit)
	}
	return ota.ImageInfo{Entry: c.Entry, Size: int(n)}, nil
}

// table8266 describes the rBoot slots as the updater's partitions: app
// ota_N at roms[N] (rom_size rounded up to whole sectors: rBoot's
// sizes leave room for a header), fs_N at fs_addr[N].
func table8266(c rboot.Config) partition.Table {
	var t partition.Table
	for i := 0; i < int(c.Count) && i < rboot.MaxROMs; i++ {
		t = append(t, partition.Entry{Type: partition.TypeApp, Subtype: uint8(partition.SubOTA0 + i),
			Offset: c.ROMs[i], Size: (c.ROMSizes[i] + flash.SectorSize - 1) &^ (flash.SectorSize - 1), Label: fmt.Sprintf("rom%d", i)})
	}
	for i := 0; i < int(c.Count) && i < rboot.MaxROMs; i++ {
		t = append(t, partition.Entry{Type: partition.TypeData, Subtype: partition.SubSPIFFS,
			Offset: c.FSAddrs[i], Size: c.FSSizes[i], Label: fmt.Sprintf("fs_%d", i)})
	}
	return t
}

// selectBoot8266 runs the updater's early init after rBoot has chosen the
// slot: update status, tombstone of a first boot.
func (d *Device) selectBoot8266() (*ota.Boot, error) {
	l := rbootLoader{d}
	_, c, err := l.read()
	if err != nil {
		return nil, err
	}
	env := ota.Env{Table: table8266(c), Log: d.log, Loader: l,
		Store: &ota.Store{Path: filepath.Join(d.opts.StateDir, OTAFile)},
		Open: func(e partition.Entry) flash.Device {
			return flash.NewWindow(d.flash, int64(e.Offset), int64(e.Size))
		}}
	b, err := ota.Select(env)
	if errors.Is(err, ota.ErrNoOTA) {
		return nil, nil
	}
	return b, err
}

// bootBanner8266 prints the app's banner with the identity of the running
// firmware: the update that wrote the slot, else the factory build.
func (d *Device) bootBanner8266(b *ota.Boot) {
	if b != nil && b.Ident != nil {
		d.banner8266(orDefault(b.Ident.Name, AppName), b.Ident.Version, b.Ident.BuildID)
		return
	}
	d.banner8266(AppName, FWVersion, MGID)
}
