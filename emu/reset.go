package emu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mosemu/mosemu/emu/flash"
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
// with `mos flash` leaves: the root filesystem partitions of both app slots
// (config levels conf1..conf9, rpc_auth.txt, ACL files, every user file)
// are erased, and the next boot formats the one it mounts and starts from
// the firmware defaults. Efuses (MAC,
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
	parts, err := d.fsPartitions()
	if err != nil {
		return r, err
	}
	for _, p := range parts {
		if err := d.flash.Erase(int64(p.Offset), int64(p.Size)); err != nil {
			return r, err
		}
		r.Erased = append(r.Erased, fmt.Sprintf("filesystem partition %s at %#x, %d KiB (config levels and files)", p.Label, p.Offset, p.Size>>10))
	}
	if err := d.flash.Sync(); err != nil {
		return r, err
	}
	r.Kept = append(r.Kept, "bootloader, partition table and firmware")
	if d.efuses != nil {
		r.Kept = append(r.Kept, "efuses")
	}
	r.Kept = append(r.Kept, "ATECC608A")
	return r, nil
}

// fsPartitions returns every root filesystem the firmware may mount: the
// data/spiffs partitions of the ESP32 partition table (fs_0 and fs_1, one
// per OTA slot), or the filesystems of the app slots in rBoot's config on
// an ESP8266 (its defaults when the config sector is blank or damaged).
func (d *Device) fsPartitions() ([]partition.Entry, error) {
	var out []partition.Entry
	if !d.board.HasPartitionTable {
		lay, err := rboot.LayoutFor(d.board.FlashSize)
		if err != nil {
			return nil, err
		}
		conf := lay.Default
		sector := make([]byte, rboot.SectorSize)
		if _, err := d.flash.ReadAt(sector, rboot.ConfigAddr); err == nil {
			if c, err := rboot.ParseConfig(sector); err == nil && c.Count > 0 {
				conf = c
			}
		}
		for i := 0; i < int(conf.Count) && i < rboot.MaxROMs; i++ {
			e := partition.Entry{Type: partition.TypeData, Subtype: partition.SubSPIFFS,
				Offset: conf.FSAddrs[i], Size: conf.FSSizes[i], Label: fmt.Sprintf("fs%d", i)}
			if e.Size != 0 && int64(e.Offset)+int64(e.Size) <= d.board.FlashSize && e.Offset%flash.SectorSize == 0 && e.Size%flash.SectorSize == 0 {
				out = append(out, e)
			}
		}
		return out, nil
	}
	raw := make([]byte, partition.TableSize)
	if _, err := d.cpuView(true).ReadAt(raw, partition.Offset); err != nil {
		return nil, err
	}
	t, err := partition.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("partition table: %v (nothing erased; --all erases the whole flash)", err)
	}
	for _, e := range t {
		if e.Type == partition.TypeData && e.Subtype == partition.SubSPIFFS {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no filesystem partition in the partition table (nothing erased; --all erases the whole flash)")
	}
	return out, nil
}
