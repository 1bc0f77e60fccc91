package emu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/afero"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/factoryfs"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/partition"
	"github.com/mosemu/mosemu/emu/rboot"
)

// ProvisionLevel is the config level where the emulator writes what it sets
// up for the device (the embedded broker): a provisioning level between the
// vendor's (1-4) and the user's (conf9.json), so that Config.Get shows what
// the device uses and the user's own settings still win.
const ProvisionLevel = 5

// factoryFS returns the fs image of the factory build (conf0.json, ca.pem)
// for the root filesystem partition of a blank chip, as `mos flash` of a
// Mongoose OS build writes it: its sectors that are not blank (erased
// sectors stay unwritten: sparse state).
func (d *Device) factoryFS() ([]factoryWrite, error) {
	off, size := d.board.FSOffset, d.board.FSSize
	if d.board.Arch == "esp8266" { // rBoot's default layout: slot 0's fs
		lay, err := rboot.LayoutFor(d.board.FlashSize)
		if err != nil {
			return nil, err
		}
		off, size = int64(lay.Default.FSAddrs[0]), int64(lay.Default.FSSizes[0])
	}
	if d.board.HasPartitionTable {
		p, ok := partition.DefaultESP32().RootFS()
		if !ok {
			return nil, errors.New("no fs partition in the default layout")
		}
		off, size = int64(p.Offset), int64(p.Size)
	}
	files, err := factoryfs.Files(d.schema())
	if err != nil {
		return nil, err
	}
	img, err := factoryfs.Image(size, files)
	if err != nil {
		return nil, err
	}
	var out []factoryWrite
	for s := 0; s < len(img); s += flash.SectorSize {
		sec := img[s:min(s+flash.SectorSize, len(img))]
		if bytes.Count(sec, []byte{flash.Erased}) == len(sec) {
			continue
		}
		out = append(out, factoryWrite{off + int64(s), sec})
	}
	return out, nil
}

// provision writes the emulator's settings for the device to
// conf<ProvisionLevel>.json (or removes it when there are none), only when
// its content changes.
func (d *Device) provision(fsys afero.Fs) error {
	name := configs.FileName(ProvisionLevel)
	var want []byte
	if b := d.opts.MQTTBroker; b != "" {
		m := map[string]any{"enable": true, "server": b}
		if d.opts.MQTTUser != "" { // a fleet's broker credentials
			m["user"], m["pass"] = d.opts.MQTTUser, d.opts.MQTTPass
		}
		v := map[string]any{"mqtt": m}
		want, _ = json.MarshalIndent(v, "", "  ")
		want = append(want, '\n')
	}
	have, err := afero.ReadFile(fsys, name)
	switch {
	case errors.Is(err, os.ErrNotExist) && want == nil:
		return nil
	case err == nil && bytes.Equal(have, want):
		return nil
	case want == nil:
		return fsys.Remove(name)
	}
	tmp := name + ".tmp"
	if err := afero.WriteFile(fsys, tmp, want, 0o644); err != nil {
		return fmt.Errorf("provisioning %s: %w", name, err)
	}
	if err := fsys.Rename(tmp, name); err != nil {
		return fmt.Errorf("provisioning %s: %w", name, err)
	}
	d.log.Debug("Provisioned "+name, console.Src("mosemu", 0))
	return nil
}
