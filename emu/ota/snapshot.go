package ota

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/partition"
)

// CreateSnapshot copies the running app and its filesystem to the inactive
// slot (mgos_ota_create_snapshot) and returns that slot. The running
// firmware must be committed.
func (b *Boot) CreateSnapshot() (int, error) {
	if b.IsFirstBoot() {
		return -1, errors.New("Cannot create snapshots in uncommitted state")
	}
	n := slotCount(b.env.Table)
	if n < 2 {
		return -1, errors.New("No app slots")
	}
	slot := (b.Slot + 1) % n
	app, _ := AppPartition(b.env.Table, slot)
	fsp, ok := FSPartition(b.env.Table, slot)
	if !ok || b.FS.Size == 0 {
		return -3, errors.New("No fs slots")
	}
	b.env.Log.Info(fmt.Sprintf("Snapshot: %s -> %s, %s -> %s", b.App.Label, app.Label, b.FS.Label, fsp.Label), console.Src("esp32_updater.c", 560))
	if err := b.copyPartition(b.App, app); err != nil {
		return -2, err
	}
	if err := b.copyPartition(b.FS, fsp); err != nil {
		return -3, err
	}
	b.env.Log.Info("Snapshot created", console.Src("esp32_updater.c", 566))
	return slot, nil
}

// copyPartition copies src over dst through the CPU's view (decrypting and
// re-encrypting on an encrypted device) unless their digests already match.
func (b *Boot) copyPartition(src, dst partition.Entry) error {
	if src.Size > dst.Size {
		return fmt.Errorf("%s does not fit %s", src.Label, dst.Label)
	}
	s, d := b.env.Open(src), b.env.Open(dst)
	sum := digest(s, int64(src.Size))
	if bytes.Equal(digest(d, int64(src.Size)), sum) {
		b.env.Log.Info(fmt.Sprintf("%s -> %s: digest matched (%x)", src.Label, dst.Label, sum), console.Src("esp32_updater.c", 520))
		return nil
	}
	if err := d.Erase(0, int64(src.Size)); err != nil {
		return fmt.Errorf("%s: erase failed: %w", dst.Label, err)
	}
	buf := make([]byte, flash.SectorSize)
	for off := int64(0); off < int64(src.Size); off += int64(len(buf)) {
		if _, err := s.ReadAt(buf, off); err != nil {
			return fmt.Errorf("%s: read @ %d failed: %w", src.Label, off, err)
		}
		if _, err := d.WriteAt(buf, off); err != nil {
			return fmt.Errorf("%s: write @ %d failed: %w", dst.Label, off, err)
		}
	}
	if !bytes.Equal(digest(d, int64(src.Size)), sum) {
		return fmt.Errorf("%s: digest mismatch after copy", dst.Label)
	}
	b.env.Log.Info(fmt.Sprintf("%s -> %s: copied %d bytes, SHA1 %x", src.Label, dst.Label, src.Size, sum), console.Src("esp32_updater.c", 548))
	return nil
}
