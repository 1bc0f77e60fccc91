package main

import (
	"context"
	"fmt"
	"os"

	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/snapshot"
	"github.com/mosemu/mosemu/lab"
	"github.com/mosemu/mosemu/labui"
	"github.com/spf13/pflag"
)

// labOptions are the run flags of the lab console, snapshots and labs.
type labOptions struct {
	ui, resetTo, lab string
}

func (lo *labOptions) flags(f *pflag.FlagSet) {
	f.StringVar(&lo.ui, "ui", "", "serve the lab console on this host address (e.g. 127.0.0.1:9090); never on the device's HTTP server")
	f.StringVar(&lo.resetTo, "reset-to", "", "restore the snapshot NAME of the state directory before starting")
	f.StringVar(&lo.lab, "lab", "", "lab file whose goals the lab console shows live")
}

// openSeat restores --reset-to if asked and opens the device.
func openSeat(ctx context.Context, opts emu.Options, lo labOptions) (*labui.Seat, error) {
	if lo.resetTo != "" {
		if err := (snapshot.Store{StateDir: opts.StateDir}).Restore(lo.resetTo); err != nil {
			return nil, fmt.Errorf("--reset-to: %w", err)
		}
		fmt.Fprintf(os.Stderr, "mosemu: %s reset to snapshot %s\n", opts.StateDir, lo.resetTo)
	}
	seat, err := labui.OpenSeat(ctx, opts)
	if err != nil {
		return nil, err
	}
	seat.OnReopen = func(d *emu.Device) {
		if p := d.SerialPath(); p != "" {
			fmt.Printf("mosemu: device reopened; serial port now %s\n", p)
		}
	}
	return seat, nil
}

// startUI serves the lab console of seat.
func startUI(seat *labui.Seat, lo labOptions) (*labui.Server, error) {
	var o labui.Options
	if lo.lab != "" {
		l, err := lab.Load(lo.lab)
		if err != nil {
			return nil, err
		}
		o.LabTitle = l.Title
		o.Goals = func(ctx context.Context, t labui.Target) (any, error) {
			return l.Check(ctx, t.Device().StateDir())
		}
	}
	srv := labui.New(o)
	srv.Add("", seat)
	addr, err := srv.Listen(lo.ui)
	if err != nil {
		return nil, fmt.Errorf("--ui: %w", err)
	}
	fmt.Printf("  Lab console:        http://%s/\n", addr)
	return srv, nil
}

// fleetUI serves the lab console of a fleet: a list of its devices, each
// linking to its page (reset and download mode; no snapshots).
func fleetUI(addr string, devs []*emu.Device) (*labui.Server, error) {
	srv := labui.New(labui.Options{})
	for i, d := range devs {
		srv.Add(fmt.Sprintf("dev-%04d", i), labui.DeviceTarget{D: d})
	}
	a, err := srv.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("--ui: %w", err)
	}
	fmt.Printf("  Lab console:        http://%s/\n", a)
	return srv, nil
}
