// Package emu is the emulated device: one board with its flash, efuses,
// serial port, I2C bus and the Mongoose OS firmware that runs on it.
package emu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mosemu/mosemu/atca"
	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/efuse"
	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/flashenc"
	"github.com/mosemu/mosemu/emu/observe"
	"github.com/mosemu/mosemu/emu/romloader"
	"github.com/mosemu/mosemu/emu/uart"
	"github.com/mosemu/mosemu/emu/wifi"
	"github.com/mosemu/mosemu/rpc"
)

// Options configure a Device.
type Options struct {
	// Arch is "esp32" (default) or "esp8266". An existing state directory
	// keeps the arch it was created with.
	Arch string
	// StateDir holds the device's persistent state; created on first run.
	StateDir string
	// HTTPAddr is where the firmware's HTTP server (http.listen_addr)
	// listens on the host, e.g. "127.0.0.1:8080" or "127.0.0.1:0".
	HTTPAddr string
	// Serial attaches the console/RPC/ROM-loader UART to a pty.
	Serial bool
	// Console receives a copy of the console log (e.g. os.Stderr); may be nil.
	Console io.Writer
	// Hub receives the device's events (console lines, RPC calls, efuse
	// burns, flash writes); nil gives the device a hub of its own.
	Hub *observe.Hub
	// Seed, when non-zero, fixes the per-unit values of a new device.
	Seed uint64
	// FlashEncryption marks a new device's bootloader as built with flash
	// encryption (first boot encrypts the flash and burns the efuses).
	FlashEncryption bool
	// Schemas shares sys_config schemas between the devices of a process;
	// nil gives the device its own.
	Schemas *configs.Schemas
	// MQTTBroker, when set, is the broker the device connects to while its
	// config leaves mqtt.server at the firmware default: MQTT (and RPC over
	// MQTT) is then on without any configuration. A configured mqtt.server
	// is used as configured.
	MQTTBroker string
	// MQTTDial, when set, opens the connection to MQTTBroker without a
	// socket (the in-process pipe of an embedded broker, mqtt.Broker.Dial).
	MQTTDial func() (net.Conn, error)
	// MQTTUser and MQTTPass, when MQTTUser is set, are provisioned with
	// MQTTBroker as mqtt.user and mqtt.pass.
	MQTTUser, MQTTPass string
	// MAC, when set (12 hex digits), is a new ESP8266's factory MAC instead
	// of one derived from Seed; an ESP32's comes from its efuses (Seed).
	MAC string
	// SectorPool, when set, shares identical flash sectors with the other
	// devices using the same pool (a fleet's factory images), copy on write.
	SectorPool *flash.SectorPool
	// Factory, when set, shares the factory image written on a new
	// device's flash with the other devices using it (a fleet); nil builds
	// it for this device.
	Factory *FactoryImages
	// ParentLocked skips the state directory's own lock: the caller holds
	// the lock of a directory above it for all its devices (a fleet, see
	// LockStateDir), and each device saves a file descriptor.
	ParentLocked bool
	// DeferSync leaves flushing the state to the disk to the host, which
	// syncs the whole filesystem now and then (atomicfile.SyncFS): a new
	// device's files are created without fsync and the flash image is
	// closed after writes without one. Atomicity is kept (rename); only
	// durability across a host crash waits for the host's sync. For fleets.
	DeferSync bool
	// TLSDynamicBuffers models mbedTLS with the dynamic-buffer patch (about
	// 5 KiB per idle TLS connection: idle buffers and the session) instead of
	// the default static 16 KiB record buffers each way.
	TLSDynamicBuffers bool
	// SerialLink is where a symlink to the serial pty is kept while the
	// device runs (default STATE/serial), so that scripts and `mos --port`
	// lines survive restarts; "-" makes none.
	SerialLink string
	// TLSHandshakeLatency makes the HTTPS server answer handshakes as slowly
	// as the real board (ESP32 1-3 s, ESP8266 7-15 s), for testing client
	// timeouts. Off by default.
	TLSHandshakeLatency bool
	// BaudTiming makes the serial pty as slow as the UART's baud rate
	// (115200 at reset, then what the host sets through the ROM loader or a
	// flasher stub), so that tool timeouts and progress bars can be tested.
	// Off by default: a pty is as fast as the host.
	BaudTiming bool
	// WiFiAPs are the access points the device's Wi-Fi sees when it scans.
	WiFiAPs []wifi.AP
	// Wiring, when non-nil, rewires the board (saved in the state file);
	// nil keeps the state's wiring (DefaultWiring on a new board).
	Wiring []Wire
	// Services, when set, registers extra RPC methods at every boot, after
	// the firmware's own (custom firmware code: tests, lab scenarios). They
	// run under the device's supervisor like every other handler.
	Services func(r rpc.Registrar)
}

// Device is one emulated board. Its methods are safe for concurrent use.
type Device struct {
	opts  Options
	board Board
	id    Identity

	flash *flash.Chip
	port  *uart.Port // nil without Options.Serial
	out   *console.Output
	log   *slog.Logger

	mu       sync.Mutex
	fw       *firmware // running firmware, nil when halted or in download mode
	httpAddr string    // actual host address of the HTTP server, kept across reboots
	httpTLS  bool      // the HTTP server runs TLS (http.ssl_cert set)
	httpPort string    // the firmware's http.listen_addr
	closed   bool
	bootErr  error
	ctx      context.Context

	// The chip: what reset it last, the boot loop, the UART receive line.
	cause     resetCause
	loopGen   int         // counts resets, so a stale boot-loop timer does nothing
	loopTimer *time.Timer // next iteration of a boot loop
	loader    *romloader.Loader
	idle      *time.Timer  // returns an idle ROM loader to the firmware
	uartSink  func([]byte) // the running firmware's UART0 consumer, nil if none
	lineMu    sync.Mutex
	lineDec   romloader.Decoder // finds SYNC frames in everything received

	encryptHook func(region string) // tests: called before each first-boot encryption step

	rebootMu    sync.Mutex
	rebootDue   time.Time
	rebootTimer *time.Timer // the pending reboot, nil when none

	efuses *efuse.Efuses // nil on boards without an efuse controller
	chip   *atca.Chip    // the ATECC608A on the I2C bus
	crypt  *flashenc.View

	serialLink string // symlink to the pty, "" without one

	mqttLog *mqttLog // console over MQTT (debug.stderr_topic)

	hub      *observe.Hub // where the device reports events (inspect.go)
	holdDL   bool         // download mode held from outside (HoldDownload)
	powerCut bool         // Close without flushing the serial port (PowerOff)

	crashes atomic.Int64 // firmware crashes since the process started
	bootGen atomic.Int64 // incremented on every boot

	lock   *stateLock // held from New to Close
	httpUp bool       // the HTTP server of the running firmware listens

	ownSchema *configs.Schema
	macFn     func() [6]byte // factory MAC source; nil derives it from the seed
}

// New opens (or creates) the device state in opts.StateDir. The device does
// not run until Start.
//
// Options are validated before anything is written, and the state
// directory is locked (ErrStateInUse names the holder's pid) until Close.
func New(opts Options) (d *Device, err error) {
	if opts.StateDir == "" {
		return nil, errors.New("emu: Options.StateDir is required")
	}
	if opts.Arch != "" {
		if _, err := BoardFor(opts.Arch); err != nil {
			return nil, fmt.Errorf("emu: %w", err)
		}
	}
	if opts.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(opts.HTTPAddr); err != nil {
			return nil, fmt.Errorf("emu: bad HTTP address %q: %v", opts.HTTPAddr, err)
		}
	}
	if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
		return nil, err
	}
	var lock *stateLock
	if !opts.ParentLocked {
		if lock, err = lockState(opts.StateDir); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			lock.unlock()
		}
	}()
	if opts.DeferSync {
		if err := precreateIdentity(opts); err != nil {
			return nil, err
		}
	}
	id, _, err := loadIdentity(opts.StateDir, newIdentity(opts))
	if err != nil {
		return nil, err
	}
	if opts.Arch != "" && opts.Arch != id.Arch {
		return nil, fmt.Errorf("emu: state %s belongs to an %s device, not %s", opts.StateDir, id.Arch, opts.Arch)
	}
	if opts.Wiring != nil {
		id.Wiring = opts.Wiring
		if err := saveIdentity(opts.StateDir, id); err != nil {
			return nil, err
		}
	}
	board, _ := BoardFor(id.Arch)
	d = &Device{opts: opts, board: board, id: id, httpAddr: orDefault(opts.HTTPAddr, "127.0.0.1:0"), lock: lock}
	d.out = console.NewOutput()
	if opts.Console != nil {
		d.out.AddSink(&console.WriterSink{W: opts.Console})
	}
	d.log = console.NewLogger(d.out)
	d.mqttLog = &mqttLog{protect: d.protect}
	d.out.AddSink(d.mqttLog)
	if board.HasEfuses {
		if d.efuses, err = efuse.Load(d.efusePath(), id.Seed); err != nil {
			return nil, fmt.Errorf("emu: %s: %w", d.efusePath(), err)
		}
		if _, err := os.Stat(d.efusePath()); errors.Is(err, fs.ErrNotExist) { // a new chip's factory efuses
			if err := d.saveNewEfuses(); err != nil {
				return nil, err
			}
		}
		d.macFn = d.efuses.MAC
	}
	if d.chip, err = atca.Load(filepath.Join(opts.StateDir, ATCAFile), id.Seed); err != nil {
		return nil, fmt.Errorf("emu: %s: %w", ATCAFile, err)
	}
	atcaPath := filepath.Join(opts.StateDir, ATCAFile)
	d.chip.OnChange = func() {
		if err := d.chip.SaveLocked(atcaPath); err != nil {
			d.log.Error("ATCA: saving state: "+err.Error(), console.Src("mosemu", 0))
		}
	}
	flashPath := filepath.Join(opts.StateDir, FlashFile)
	_, statErr := os.Stat(flashPath)
	if d.flash, err = flash.Open(flashPath, board.FlashSize); err != nil {
		return nil, err
	}
	d.flash.DeferSync(opts.DeferSync)
	if opts.SectorPool != nil {
		d.flash.SetPool(opts.SectorPool)
	}
	d.attachObservers()
	if errors.Is(statErr, fs.ErrNotExist) {
		if err := d.factoryProvision(); err != nil {
			d.flash.Close()
			return nil, fmt.Errorf("emu: writing the factory image: %w", err)
		}
	}
	if opts.Serial {
		if d.port, err = uart.Open(); err != nil {
			d.flash.Close()
			return nil, fmt.Errorf("emu: opening the serial pty: %w", err)
		}
		d.out.AddSink(d.port)
		d.port.SetConsumer(d.serialInput) // the line belongs to the chip
		d.setBaud(defaultBaud)
		if link := orDefault(opts.SerialLink, filepath.Join(opts.StateDir, SerialLinkFile)); link != "-" {
			if err := linkSerial(link, d.port.Path()); err != nil {
				d.port.Close()
				d.flash.Close()
				return nil, fmt.Errorf("emu: %w", err)
			}
			d.serialLink = link
		}
	}
	return d, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Board returns the board profile.
func (d *Device) Board() Board { return d.board }

// Identity returns the persistent identity of the device.
func (d *Device) Identity() Identity { return d.id }

// SerialPath returns the pty path host tools open, or "" without a serial port.
func (d *Device) SerialPath() string {
	if d.port == nil {
		return ""
	}
	return d.port.Path()
}

// HTTPAddr returns the host address of the firmware's HTTP server once it
// has started.
func (d *Device) HTTPAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.httpAddr
}

// HTTPServing reports whether the firmware's HTTP server is listening on
// HTTPAddr now (false while halted, rebooting, or with http.enable off).
func (d *Device) HTTPServing() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.httpUp
}

// ErrHostBind is in the boot error when a host address the device needs
// (its HTTP server's) cannot be bound: unlike a firmware failure, the
// device cannot be reached at all.
var ErrHostBind = errors.New("cannot bind the host address")

// Efuses returns the ESP32 efuses, or nil on an ESP8266.
func (d *Device) Efuses() *efuse.Efuses { return d.efuses }

// Flash returns the raw SPI flash (what a flash dump shows).
func (d *Device) Flash() *flash.Chip { return d.flash }

// Logger returns the device's console logger.
func (d *Device) Logger() *slog.Logger { return d.log }

// Start powers the device on: the ROM boots what is in flash. When a stage
// fails (an erased or corrupt image, a corrupt partition table, an
// unmountable filesystem) the chip prints what the real one prints and
// loops, reachable through the ROM loader on its serial port; Start then
// returns the reason (a *BootError).
func (d *Device) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("emu: device closed")
	}
	d.ctx = ctx
	return d.resetLocked(resetPowerOn)
}

// Reboot restarts the chip as esp_restart() does (rst:0xc SW_CPU_RESET):
// connections drop, config and files reload. In download mode it resets
// the chip out of it, as the reset button does.
func (d *Device) Reboot() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("emu: device closed")
	}
	if d.loader != nil {
		d.leaveDownloadLocked(resetSoftwareCPU, "reset")
		return d.bootErr
	}
	return d.resetLocked(resetSoftwareCPU)
}

// firmwareRestart is esp_restart() called by the firmware (a scheduled
// Sys.Reboot, the updater's revert): once a SYNC has put the chip in
// download mode, the firmware and its timers are gone.
func (d *Device) firmwareRestart() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.loader != nil {
		return
	}
	d.resetLocked(resetSoftwareCPU)
}

// BootError returns why the last boot failed, or nil.
func (d *Device) BootError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bootErr
}

// Booted reports whether the application (Mongoose OS) is up.
func (d *Device) Booted() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fw != nil
}

// Close stops the firmware and releases the state.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.stopLocked()
	d.cancelBootLoopLocked()
	if d.idle != nil {
		d.idle.Stop()
	}
	d.loader = nil
	noFlush := d.powerCut
	d.mu.Unlock()
	if d.port != nil {
		if !noFlush {
			d.port.Flush(200 * time.Millisecond)
		}
		if d.serialLink != "" {
			unlinkSerial(d.serialLink, d.port.Path())
		}
		d.port.Close()
	}
	err := d.flash.Close()
	d.lock.unlock()
	return err
}

func (d *Device) stopLocked() {
	d.cancelReboot() // the firmware's timers die with it
	if d.fw != nil {
		d.fw.stop()
		d.fw = nil
	}
}

// resetLocked resets the chip with cause and boots it.
func (d *Device) resetLocked(cause resetCause) error {
	d.stopLocked()
	d.cancelBootLoopLocked()
	d.cause = cause
	return d.bootLocked()
}

// bootLocked boots from reset. A stage that fails as the real chip's does
// (*BootError) schedules the next iteration of the boot loop, or halts;
// anything else (a crash while booting, a host error) halts the device.
func (d *Device) bootLocked() error {
	for {
		d.bootGen.Add(1)
		fw, err := d.bootSupervised()
		if errors.Is(err, errEncryptionDone) {
			d.cause = resetSoftware
			continue
		}
		if err == nil {
			d.fw, d.bootErr = fw, nil
			return nil
		}
		var f *BootError
		if !errors.As(err, &f) {
			d.log.Error(err.Error(), console.Src("mgos_init.c", 115))
			f = &BootError{Stage: "firmware", Reason: err.Error(), err: err}
		}
		d.bootErr = f
		if f.next != 0 {
			d.scheduleBootLoopLocked(f.next)
		}
		return f
	}
}

func (d *Device) scheduleBootLoopLocked(next resetCause) {
	d.loopGen++
	gen := d.loopGen
	d.loopTimer = time.AfterFunc(bootLoopDelay, func() {
		d.protect("boot loop", func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.closed || gen != d.loopGen || d.loader != nil || d.fw != nil {
				return
			}
			d.cause = next
			d.bootLocked()
		})
	})
}

func (d *Device) cancelBootLoopLocked() {
	d.loopGen++
	if d.loopTimer != nil {
		d.loopTimer.Stop()
		d.loopTimer = nil
	}
}
