package labui

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/observe"
	"github.com/mosemu/mosemu/emu/snapshot"
)

// Target is a device the lab console shows. Actions a target does not
// support (a fleet device cannot be restored) return an error.
type Target interface {
	// Device returns the device as it is now (it may be replaced by a
	// restore or a power cut).
	Device() *emu.Device
	// Hub is where the device's events arrive; it outlives the device.
	Hub() *observe.Hub
	Reset() error
	HoldDownload(on bool) error
	PowerCut() error
	Snapshot(name string) (snapshot.Info, error)
	Restore(name string) error
	Snapshots() ([]snapshot.Info, error)
}

// Seat is one device run by this process: it owns the device's life so
// that a restore or a power cut can reopen it from its state directory,
// and it marks the state directory as in use (snapshot.Hold) meanwhile.
type Seat struct {
	opts emu.Options
	ctx  context.Context

	mu      sync.Mutex
	dev     *emu.Device
	release func()
	past    *backlog
	// OnReopen, when set, is called after the device was reopened (its
	// serial pty path changes, as when a USB board is replugged).
	OnReopen func(*emu.Device)
}

// OpenSeat opens the device of opts.StateDir (it does not boot it: call
// Start). opts.Hub is created when nil, so that it survives reopening.
func OpenSeat(ctx context.Context, opts emu.Options) (*Seat, error) {
	if opts.Hub == nil {
		opts.Hub = &observe.Hub{}
	}
	s := &Seat{opts: opts, ctx: ctx, past: &backlog{}}
	opts.Hub.Add(s.past) // before the first boot, so a page opened later sees it
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Seat) open() error {
	if busy, err := snapshot.Running(s.opts.StateDir); err != nil || busy {
		if err == nil {
			err = fmt.Errorf("%s is used by %s: %w", s.opts.StateDir, snapshot.Holder(s.opts.StateDir), snapshot.ErrRunning)
		}
		return err
	}
	if err := (snapshot.Store{StateDir: s.opts.StateDir}).Recover(); err != nil {
		return err
	}
	d, err := emu.New(s.opts)
	if err != nil {
		return err
	}
	release, err := snapshot.Hold(s.opts.StateDir)
	if err != nil {
		d.Close()
		return err
	}
	s.dev, s.release = d, release
	return nil
}

// Backlog returns the latest events (console lines, RPC calls, lifecycle),
// oldest first, for a page opened after them.
func (s *Seat) Backlog() []observe.Event { return s.past.get() }

// backlog keeps the latest events of a seat.
type backlog struct {
	mu     sync.Mutex
	events []observe.Event
}

const keepBacklog = 1000

func (b *backlog) Provides(k observe.Kind) bool { return k != observe.FlashWrite }
func (b *backlog) OnEvent(e observe.Event) {
	b.mu.Lock()
	if len(b.events) >= keepBacklog {
		b.events = append(b.events[:0:0], b.events[len(b.events)-keepBacklog/2:]...)
	}
	b.events = append(b.events, e)
	b.mu.Unlock()
}

func (b *backlog) get() []observe.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]observe.Event(nil), b.events...)
}

// Start boots the device.
func (s *Seat) Start() error { return s.Device().Start(s.ctx) }

// Device implements Target.
func (s *Seat) Device() *emu.Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dev
}

// Hub implements Target.
func (s *Seat) Hub() *observe.Hub { return s.opts.Hub }

func (s *Seat) note(what string) {
	s.opts.Hub.Emit(observe.Event{Kind: observe.Lifecycle, Line: what})
}

// Reset implements Target: the EN button (the firmware reboots).
func (s *Seat) Reset() error {
	s.note("reset (EN button)")
	return s.Device().Reboot()
}

// HoldDownload implements Target.
func (s *Seat) HoldDownload(on bool) error {
	if on {
		s.note("held in download mode (GPIO0 low)")
	} else {
		s.note("download mode released")
	}
	return s.Device().HoldDownload(on)
}

// PowerCut implements Target: the power goes off without any flush and
// comes back; the device boots from what its state files hold.
func (s *Seat) PowerCut() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.note("power cut")
	s.dev.PowerOff()
	s.release()
	return s.reopenLocked()
}

func (s *Seat) reopenLocked() error {
	if err := s.open(); err != nil {
		return fmt.Errorf("reopening the device: %w", err)
	}
	err := s.dev.Start(s.ctx)
	if s.OnReopen != nil {
		s.OnReopen(s.dev)
	}
	return err
}

// Snapshot implements Target: the state as it is now (each file as it is
// at that instant, as after a power cut).
func (s *Seat) Snapshot(name string) (snapshot.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, err := snapshot.Store{StateDir: s.opts.StateDir, Owner: true}.Save(name)
	if err == nil {
		s.note("snapshot " + name + " saved")
	}
	return info, err
}

// Restore implements Target: stop the device, restore the snapshot, boot.
func (s *Seat) Restore(name string) error {
	st := snapshot.Store{StateDir: s.opts.StateDir, Owner: true}
	if _, err := st.Load(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dev.Close()
	s.release()
	rerr := st.Restore(name)
	if err := s.reopenLocked(); err != nil {
		return errors.Join(rerr, err)
	}
	if rerr == nil {
		s.note("restored snapshot " + name)
	}
	return rerr
}

// Snapshots implements Target.
func (s *Seat) Snapshots() ([]snapshot.Info, error) {
	return snapshot.Store{StateDir: s.opts.StateDir, Owner: true}.List()
}

// Close stops the device.
func (s *Seat) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.dev.Close()
	s.release()
	return err
}

// DeviceTarget shows a device this process does not own (a fleet member):
// only reset and download mode are available.
type DeviceTarget struct{ D *emu.Device }

var errNotOwned = errors.New("not available for a fleet device: run it alone with mosemu run --ui")

// Device implements Target.
func (t DeviceTarget) Device() *emu.Device { return t.D }

// Hub implements Target.
func (t DeviceTarget) Hub() *observe.Hub { return t.D.Hub() }

// Reset implements Target.
func (t DeviceTarget) Reset() error { return t.D.Reboot() }

// HoldDownload implements Target.
func (t DeviceTarget) HoldDownload(on bool) error { return t.D.HoldDownload(on) }

// PowerCut implements Target.
func (t DeviceTarget) PowerCut() error { return errNotOwned }

// Snapshot implements Target.
func (t DeviceTarget) Snapshot(string) (snapshot.Info, error) { return snapshot.Info{}, errNotOwned }

// Restore implements Target.
func (t DeviceTarget) Restore(string) error { return errNotOwned }

// Snapshots implements Target.
func (t DeviceTarget) Snapshots() ([]snapshot.Info, error) { return nil, nil }
