package emu

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/mosemu/mosemu/atca"
	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/observe"
	"github.com/mosemu/mosemu/emu/partition"
	"github.com/mosemu/mosemu/rpc"
	"github.com/spf13/afero"
)

// This file is the device's observation seam: events for hooks (the lab
// console, graders) and read-only views of the running firmware.

// Hub returns the hub the device reports its events to (Options.Hub, or
// one of its own).
func (d *Device) Hub() *observe.Hub { return d.hub }

// consoleEvents is a console sink that reports every line to the hub.
type consoleEvents struct{ hub *observe.Hub }

func (c consoleEvents) WriteLog(line []byte) { c.emit("", line) }

// WriteLogLevel implements console.LevelSink.
func (c consoleEvents) WriteLogLevel(l slog.Level, line []byte) {
	level := "verbose"
	switch {
	case l >= console.LevelError:
		level = "error"
	case l >= console.LevelWarn:
		level = "warn"
	case l >= console.LevelInfo:
		level = "info"
	case l >= console.LevelDebug:
		level = "debug"
	}
	c.emit(level, line)
}

func (c consoleEvents) emit(level string, line []byte) {
	if c.hub.Wants(observe.Console) {
		c.hub.Emit(observe.Event{Kind: observe.Console, Level: level, Line: strings.TrimRight(string(line), "\r\n")})
	}
}

// attachObservers wires the chip's and the console's events to the hub.
func (d *Device) attachObservers() {
	if d.opts.Hub != nil {
		d.hub = d.opts.Hub
	} else {
		d.hub = &observe.Hub{}
	}
	hub := d.hub
	d.out.AddSink(consoleEvents{hub})
	d.flash.OnChange = func(off, n int64, erase bool) {
		hub.Emit(observe.Event{Kind: observe.FlashWrite, Off: off, Len: n, Erase: erase})
	}
	if d.efuses != nil {
		d.efuses.OnBurn = func() { hub.Emit(observe.Event{Kind: observe.EfuseBurn}) }
	}
}

// traceRPC reports every request the dispatcher answers to the hub.
func (d *Device) traceRPC(disp *rpc.Dispatcher) {
	hub := d.hub
	disp.Trace = func(req *rpc.Request, err error, latency time.Duration) {
		if !hub.Wants(observe.RPC) {
			return
		}
		c := &observe.Call{Channel: req.Channel.Type, Peer: req.Channel.Info, Method: req.Method, User: req.User, Latency: latency}
		var e *rpc.Error
		switch {
		case errors.Is(err, rpc.ErrDrop):
			c.Dropped = true
		case errors.As(err, &e):
			c.Code = e.Code
		case err != nil:
			c.Code = 500
		}
		hub.Emit(observe.Event{Kind: observe.RPC, Call: c})
	}
}

// Running reports whether the firmware is up (not halted by a failed boot,
// not in download mode, not closed).
func (d *Device) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fw != nil
}

// Downloading reports whether the ROM loader owns the serial port.
func (d *Device) Downloading() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.loader != nil
}

// FS returns the running firmware's root filesystem, or nil.
func (d *Device) FS() afero.Fs {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fw == nil || d.fw.fs == nil {
		return nil
	}
	return d.fw.fs
}

// ConfigLevels returns the running firmware's sys_config as it is after
// each level 0 (schema defaults) to 9, so that a tool can tell which level
// each value comes from; nil when the firmware is not running.
func (d *Device) ConfigLevels() ([]*configs.Config, error) {
	d.mu.Lock()
	fw := d.fw
	d.mu.Unlock()
	if fw == nil || fw.cfg == nil {
		return nil, nil
	}
	levels := make([]*configs.Config, 10)
	for i := range levels {
		c, err := fw.cfg.Loader.Load(i, false)
		if err != nil {
			return nil, err
		}
		levels[i] = c
	}
	return levels, nil
}

// RAM returns the firmware's heap: total, free, minimum free; zeros when
// not running.
func (d *Device) RAM() (total, free, minFree int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fw == nil || d.fw.ram == nil {
		return 0, 0, 0
	}
	return d.fw.ram.Stats()
}

// ServerConns returns how many connections the firmware's HTTP server
// holds (each charged to RAM: TLS ones at the mbedTLS cost).
func (d *Device) ServerConns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fw == nil || d.fw.ram == nil {
		return 0
	}
	return d.fw.ram.Conns()
}

// PartitionTable returns the partition table the running firmware booted
// with (read through the flash encryption engine), or nil.
func (d *Device) PartitionTable() partition.Table {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fw == nil {
		return nil
	}
	return d.fw.table
}

// ATCA returns the ATECC608A on the device's I2C bus.
func (d *Device) ATCA() *atca.Chip { return d.chip }

// PowerOff cuts the power: the firmware stops where it is, nothing queued
// on the serial port is flushed, and the state is what was on flash and in
// the efuses at that instant. The device is closed afterwards.
func (d *Device) PowerOff() error {
	d.mu.Lock()
	d.powerCut = true
	d.mu.Unlock()
	return d.Close()
}
