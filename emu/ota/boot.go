package ota

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"

	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/partition"
)

// Env is the flash the updater works on.
type Env struct {
	Table partition.Table
	// Open returns the CPU's view of a partition (through the encryption
	// engine when the partition is encrypted and encryption is on).
	Open  func(partition.Entry) flash.Device
	Store *Store
	Log   *slog.Logger
	// Loader, when set, replaces otadata and the ESP32 image checks.
	Loader Loader
}

// Boot is the update state of one boot of the firmware: the slot the
// bootloader chose and the status word read at early init (g_boot_status).
// Its methods are safe for concurrent use.
type Boot struct {
	env Env

	// Slot is the app slot running; App and FS its partitions.
	Slot    int
	App, FS partition.Entry
	// Image is the running app image; Ident its identity from the update
	// that wrote it, when known.
	Image ImageInfo
	Ident *SlotInfo

	mu     sync.Mutex
	status Status
}

// ErrNoOTA is returned on a partition table without OTA app slots.
var ErrNoOTA = errors.New("not in OTA boot mode")

// AppPartition returns the app partition of slot (subtype ota_N).
func AppPartition(t partition.Table, slot int) (partition.Entry, bool) {
	for _, e := range t {
		if e.Type == partition.TypeApp && int(e.Subtype) == partition.SubOTA0+slot {
			return e, true
		}
	}
	return partition.Entry{}, false
}

// FSPartition returns the filesystem partition paired with slot ("fs_N"),
// or, for slot 0 on a table without one, the root filesystem partition.
func FSPartition(t partition.Table, slot int) (partition.Entry, bool) {
	if e, ok := t.Find("fs_" + strconv.Itoa(slot)); ok {
		return e, true
	}
	if slot == 0 {
		return t.RootFS()
	}
	return partition.Entry{}, false
}

func slotCount(t partition.Table) int {
	n := 0
	for n < 16 {
		if _, ok := AppPartition(t, n); !ok {
			break
		}
		n++
	}
	return n
}

func (env Env) otadata() (flash.Device, bool) {
	for _, e := range env.Table {
		if e.Type == partition.TypeData && e.Subtype == partition.SubOTAData {
			return env.Open(e), true
		}
	}
	return nil, false
}

// Select does what the 2nd-stage bootloader and the updater's early init do
// before the firmware runs: choose the app slot from otadata (another slot
// when its image is invalid), read the update status, and on the first boot
// of an update tombstone it (persisted status and otadata point back to the
// old slot) so that anything going wrong before the commit reverts.
func Select(env Env) (*Boot, error) {
	n := slotCount(env.Table)
	if n == 0 {
		return nil, ErrNoOTA
	}
	b := &Boot{env: env}
	want := 0
	if env.Loader != nil {
		if s, ok := env.Loader.BootSlot(n); ok {
			want = s
		}
	} else if od, ok := env.otadata(); ok {
		if s, ok := BootSlot(od, n); ok {
			want = s
		}
	}
	var lastErr error
	for i := 0; i < n; i++ {
		slot := (want + i) % n
		app, _ := AppPartition(env.Table, slot)
		img, err := env.verify(env.Open(app), int64(app.Size))
		if err != nil {
			env.Log.Error(fmt.Sprintf("%s at 0x%x: %v", app.Label, app.Offset, err), console.Src("bootloader_utility.c", 301))
			lastErr = err
			continue
		}
		b.Slot, b.App, b.Image = slot, app, img
		b.FS, _ = FSPartition(env.Table, slot)
		lastErr = nil
		break
	}
	if lastErr != nil {
		// Nothing valid: leave refusing to boot to the boot sequence.
		b.Slot, b.App = want, mustApp(env.Table, want)
		b.FS, _ = FSPartition(env.Table, want)
	}
	rec, err := env.Store.Load()
	if err != nil {
		env.Log.Error("Failed to open NVS: "+err.Error(), console.Src("esp32_updater.c", 452))
	}
	b.status = rec.Update
	if si, ok := rec.Slots[strconv.Itoa(b.Slot)]; ok && b.imageDigest(si.ImageSize) == si.ImageSHA1 {
		b.Ident = &si
	}
	if b.status.FirstBoot() {
		// Tombstone: the next boot uses the old slot unless this one commits.
		old := b.status.OldSlot()
		if err := b.persist(MakeStatus(old, old, false, false), ""); err != nil {
			return nil, err
		}
		if env.Loader != nil {
			err = env.Loader.Tombstone(old, n)
		} else {
			err = b.setBootSlot(old)
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

func mustApp(t partition.Table, slot int) partition.Entry {
	e, _ := AppPartition(t, slot)
	return e
}

func (b *Boot) imageDigest(size int) string {
	if size <= 0 || size > int(b.App.Size) {
		return ""
	}
	h := sha1.New()
	if _, err := io.Copy(h, io.NewSectionReader(b.env.Open(b.App), 0, int64(size))); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// persist writes the status word (and the old FS description) to the store
// without changing the in-memory status.
func (b *Boot) persist(s Status, oldFS string) error {
	return b.env.Store.Update(func(r *Record) {
		r.Update = s
		r.OldFS = oldFS
	})
}

func (b *Boot) setBootSlot(slot int) error {
	app, ok := AppPartition(b.env.Table, slot)
	if !ok {
		return fmt.Errorf("no app partition for slot %d", slot)
	}
	if b.env.Loader != nil {
		b.env.Log.Info("Setting boot partition to "+app.Label, console.Src("esp_updater.c", 214))
		return b.env.Loader.SetBootSlot(slot, slotCount(b.env.Table))
	}
	od, ok := b.env.otadata()
	if !ok {
		return errors.New("no otadata partition")
	}
	b.env.Log.Info("Setting boot partition to "+app.Label, console.Src("esp32_updater.c", 478))
	return SetBootSlot(od, slot, slotCount(b.env.Table))
}

// setStatus persists s and makes it the current status.
func (b *Boot) setStatus(s Status, oldFS string) error {
	if err := b.persist(s, oldFS); err != nil {
		return err
	}
	b.status = s
	return nil
}

// BootState is what OTA.GetBootState reports.
type BootState struct {
	ActiveSlot  int
	IsCommitted bool
	RevertSlot  int
}

// State returns the boot state.
func (b *Boot) State() BootState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stateLocked()
}

func (b *Boot) stateLocked() BootState {
	return BootState{ActiveSlot: b.status.NewSlot(), IsCommitted: !b.status.FirstBoot(), RevertSlot: b.status.OldSlot()}
}

// IsFirstBoot reports that this boot runs an update not yet committed.
func (b *Boot) IsFirstBoot() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status.FirstBoot()
}

// NeedsMerge reports whether the old filesystem must be merged into this
// slot's (first boot after an update that wrote a new fs image).
func (b *Boot) NeedsMerge() (oldSlot int, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.status
	return s.OldSlot(), s.MergeFS() && s.NewSlot() != s.OldSlot()
}

// SetState changes the boot state as OTA.SetBootState does.
func (b *Boot) SetState(bs BootState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.setStatus(MakeStatus(bs.RevertSlot, bs.ActiveSlot, !bs.IsCommitted, false), ""); err != nil {
		return err
	}
	return b.setBootSlot(bs.ActiveSlot)
}

// Commit marks the running update good: the new slot stays the boot slot.
// It returns false when there is nothing to commit.
func (b *Boot) Commit() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.status.FirstBoot() {
		return false
	}
	slot := b.status.NewSlot()
	if err := b.setStatus(MakeStatus(b.status.OldSlot(), slot, false, false), ""); err != nil {
		b.env.Log.Error("Failed to commit update: "+err.Error(), console.Src("esp32_updater.c", 520))
		return false
	}
	if err := b.setBootSlot(slot); err != nil {
		b.env.Log.Error("Failed to commit update: "+err.Error(), console.Src("esp32_updater.c", 520))
		return false
	}
	b.env.Log.Info(fmt.Sprintf("Committed slot %d", slot), console.Src("esp32_updater.c", 518))
	return true
}

// Revert makes the old slot the boot slot again; it returns false when the
// running firmware is committed (nothing to revert to).
func (b *Boot) Revert() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.status.FirstBoot() {
		return false
	}
	slot := b.status.OldSlot()
	if slot == b.status.NewSlot() {
		return true
	}
	b.env.Log.Error(fmt.Sprintf("Reverting to slot %d", slot), console.Src("esp32_updater.c", 508))
	if err := b.setStatus(MakeStatus(slot, slot, false, false), ""); err != nil {
		b.env.Log.Error("Failed to revert: "+err.Error(), console.Src("esp32_updater.c", 508))
		return false
	}
	if err := b.setBootSlot(slot); err != nil {
		b.env.Log.Error("Failed to revert: "+err.Error(), console.Src("esp32_updater.c", 508))
		return false
	}
	return true
}

// markUpdated records a finished update to newSlot: status (old = the
// running slot, first boot, merge fs), the identity of the new slot, and
// the boot slot in otadata.
func (b *Boot) markUpdated(newSlot int, si SlotInfo) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := MakeStatus(b.Slot, newSlot, true, true)
	err := b.env.Store.Update(func(r *Record) {
		r.Update, r.OldFS = s, "LFS"
		if r.Slots == nil {
			r.Slots = map[string]SlotInfo{}
		}
		r.Slots[strconv.Itoa(newSlot)] = si
	})
	if err != nil {
		return err
	}
	b.status = s
	if b.env.Loader != nil {
		return b.env.Loader.Updated(b.Slot, newSlot)
	}
	return b.setBootSlot(newSlot)
}
