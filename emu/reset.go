package emu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mosemu/mosemu/emu/partition"
	"github.com/mosemu/mosemu/emu/rboot"
)

// ResetReport says what FactoryReset erased.
type ResetReport struct {
	// Erased lists what is gone, e.g. "fs partition fs (0x190000, 256 KiB)".
	Erased []string
	// Kept lists what survives, e.g. "efuses".
	Kept []string
}

// FactoryReset returns the stopped device in dir to the state a reflash
// with `mos flash` leaves: the root filesystem partition (config levels
// conf1..conf9, rpc_auth.txt, ACL files, every user file) is erased, and the
// next boot formats it and starts from the firmware defaults. Efuses (MAC,
// flash encryption key and counter), the ATECC608A and the rest of the flash
// are kept, as a reflash keeps them.
//
// With all, everything a device accumulates is removed: the flash image,
// the efuses and the ATECC608A state; only device.json (arch and per-unit
// seed, hence the factory MAC and serial numbers) stays, so the next start
// is this very board fresh from the factory.
//
// The device must not be running: its process holds the flash in memory.
// A device whose STATE/serial link points to a live pty is refused.
func FactoryReset(dir string, all bool) (ResetReport, error) {
	var r ResetReport
	if _, err := os.Stat(filepath.Join(dir, StateFile)); err != nil {
		return r, fmt.Errorf("%s is not a device state directory (no %s): %w", dir, StateFile, err)
	}
	// A running device keeps STATE/serial pointing to its pty, which exists
	// while the process holds it (after a kill -9 the link stays, its pty
	// goes).
	link := filepath.Join(dir, SerialLinkFile)
	if pty, err := os.Readlink(link); err == nil {
		if _, err := os.Stat(pty); err == nil {
			return r, fmt.Errorf("the device on %s is running (%s -> %s): stop it first (Ctrl-C)", dir, link, pty)
		}
	}
	if all {
		for _, name := range []string{FlashFile, EfuseFile, ATCAFile} {
			err := os.Remove(filepath.Join(dir, name))
			switch {
			case err == nil:
				r.Erased = append(r.Erased, name)
			case !errors.Is(err, fs.ErrNotExist):
				return r, err
			}
		}
		r.Kept = append(r.Kept, StateFile+" (arch, MAC and serial numbers)")
		return r, nil
	}
	d, err := New(Options{StateDir: dir})
	if err != nil {
		return r, err
	}
	defer d.Close()
	if len(d.flash.UsedSectors()) == 0 {
		r.Kept = append(r.Kept, "flash (blank already)")
		return r, nil
	}
	part, err := d.rootFSPartition()
	if err != nil {
		return r, err
	}
	if err := d.flash.Erase(int64(part.Offset), int64(part.Size)); err != nil {
		return r, err
	}
	if err := d.flash.Sync(); err != nil {
		return r, err
	}
	r.Erased = append(r.Erased, fmt.Sprintf("filesystem partition %s at %#x, %d KiB (config levels and files)", part.Label, part.Offset, part.Size>>10))
	r.Kept = append(r.Kept, "bootloader, partition table and firmware")
	if d.efuses != nil {
		r.Kept = append(r.Kept, "efuses")
	}
	r.Kept = append(r.Kept, "ATECC608A")
	return r, nil
}

// rootFSPartition locates the root filesystem as the firmware does at boot:
// from the partition table on an ESP32, from rBoot's config (the current
// app slot's filesystem) on an ESP8266.
func (d *Device) rootFSPartition() (partition.Entry, error) {
	if !d.board.HasPartitionTable {
		// ESP8266: the filesystem of the app slot rBoot's config selects
		// (its defaults when the config sector is blank or damaged).
		lay, err := rboot.LayoutFor(d.board.FlashSize)
		if err != nil {
			return partition.Entry{}, err
		}
		conf := lay.Default
		sector := make([]byte, rboot.SectorSize)
		if _, err := d.flash.ReadAt(sector, rboot.ConfigAddr); err == nil {
			if c, err := rboot.ParseConfig(sector); err == nil && int(c.CurrentROM) < rboot.MaxROMs && c.FSSizes[c.CurrentROM] != 0 {
				conf = c
			}
		}
		rom := int(conf.CurrentROM)
		if rom >= rboot.MaxROMs {
			rom = 0
		}
		return partition.Entry{Type: partition.TypeData, Subtype: partition.SubSPIFFS,
			Offset: conf.FSAddrs[rom], Size: conf.FSSizes[rom], Label: fmt.Sprintf("fs%d", rom)}, nil
	}
	raw := make([]byte, partition.TableSize)
	if _, err := d.cpuView(true).ReadAt(raw, partition.Offset); err != nil {
		return partition.Entry{}, err
	}
	t, err := partition.Parse(raw)
	if err != nil {
		return partition.Entry{}, fmt.Errorf("partition table: %v (nothing erased; --all erases the whole flash)", err)
	}
	p, ok := t.RootFS()
	if !ok {
		return partition.Entry{}, errors.New("no filesystem partition in the partition table (nothing erased; --all erases the whole flash)")
	}
	return p, nil
}
