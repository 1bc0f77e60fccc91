package emu

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/mosemu/mosemu/efuse"
	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/flashenc"
	"github.com/mosemu/mosemu/emu/romloader"
)

// The UART0 receive line belongs to the chip, not to the firmware. Every
// byte the host sends goes through Device.serialInput, installed once by New
// whatever the firmware does: it recognises a ROM loader SYNC at any time
// (firmware running, boot failed or looping, a flasher stub running, UART RPC
// disabled) and resets the chip into download mode, the emulated stand-in
// for tools pulling GPIO0 low and pulsing EN with DTR/RTS, which a pty
// cannot carry. Anything else goes to the consumer the running firmware
// registered (its RPC channel), or nowhere.

// downloadIdle is how long the ROM loader waits without input before the
// emulated board is reset back into the firmware (a pty cannot carry the
// RTS pulse tools use for that). An RPC handshake from mos (`"""\x04"""`)
// resets it at once.
const downloadIdle = 10 * time.Second

// rpcHandshake is what mos sends to reach the firmware's RPC channel.
var rpcHandshake = []byte("\"\"\"\x04\"\"\"")

// isSyncRequest reports whether a SLIP frame is a ROM loader SYNC request:
// direction 0, command 0x08, 36 bytes of data starting 07 07 12 20 (tools
// send 32 × 0x55 after it; the magic is what identifies the request).
func isSyncRequest(f []byte) bool {
	return len(f) == 8+36 && f[0] == 0x00 && f[1] == romloader.CmdSync && f[2] == 36 && f[3] == 0 &&
		bytes.HasPrefix(f[8:], []byte{0x07, 0x07, 0x12, 0x20})
}

// serialInput is the chip's UART0 receiver (the port's only consumer). It
// runs under the device's supervisor: a panic is this device's crash.
func (d *Device) serialInput(b []byte) {
	var sink func([]byte)
	d.protect("UART0 RX", func() { sink = d.routeInput(b) })
	if sink != nil {
		sink(b) // the firmware's channel, supervised on its own
	}
}

// routeInput finds a SYNC, feeds the ROM loader in download mode, and
// otherwise returns the firmware's consumer for b (nil: nobody listens).
func (d *Device) routeInput(b []byte) func([]byte) {
	// Find a SYNC frame: whole frames only, so that a READ_FLASH ack or a
	// data frame starting with 00 08 is never taken for one.
	syncEnd := -1
	var syncFrame []byte
	d.lineMu.Lock()
	for i, c := range b {
		if f, ok := d.lineDec.Step(c); ok && isSyncRequest(f) {
			syncEnd, syncFrame = i, f
		}
	}
	d.lineMu.Unlock()

	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
	case d.loader != nil: // download mode
		if syncEnd >= 0 && d.loader.StubRunning() {
			// The host resets a chip running a flasher stub: back to the ROM.
			d.romResetLocked(resetPowerOn)
			b = append(romloader.Encode(syncFrame), b[syncEnd+1:]...)
		}
		d.feedLoaderLocked(b)
	case syncEnd < 0:
		return d.uartSink
	default:
		d.enterDownloadLocked()
		d.feedLoaderLocked(append(romloader.Encode(syncFrame), b[syncEnd+1:]...))
	}
	return nil
}

// enterDownloadLocked resets the chip with GPIO0 low: whatever ran stops and
// the ROM loader owns the UART.
func (d *Device) enterDownloadLocked() {
	d.stopLocked()
	d.cancelBootLoopLocked()
	d.port.SetSoftwareFlowControl(false) // SLIP data contains 0x11/0x13
	d.romResetLocked(resetPowerOn)
	d.idle = time.AfterFunc(downloadIdle, d.downloadIdleExpired)
}

// romResetLocked starts a fresh ROM loader session and prints what the ROM
// prints when strapped for download.
func (d *Device) romResetLocked(cause resetCause) {
	d.setBaud(defaultBaud)
	d.printROMBanner(cause, true)
	d.loader = romloader.New(loaderTarget{d}, d.port)
}

// feedLoaderLocked hands input to the ROM loader and leaves download mode
// when the loader exits or mos asks for the firmware's RPC channel.
func (d *Device) feedLoaderLocked(b []byte) {
	if d.idle != nil {
		d.idle.Reset(downloadIdle)
	}
	ex, done := d.loader.Feed(b)
	switch {
	case done && (ex == romloader.ExitResetToROM || d.holdDL): // GPIO0 held low: the ROM again
		d.romResetLocked(resetSoftwareCPU)
	case done && ex == romloader.ExitReboot:
		d.leaveDownloadLocked(resetSoftwareCPU, "reboot requested")
	case done:
		d.leaveDownloadLocked(resetPowerOn, "running user code")
	case !d.holdDL && !d.loader.StubRunning() && bytes.Contains(b, rpcHandshake): // (a stub's data may hold anything)
		d.leaveDownloadLocked(resetPowerOn, "RPC handshake")
	}
}

// downloadIdleExpired returns an idle ROM loader to the firmware, unless
// the download mode is held (HoldDownload).
func (d *Device) downloadIdleExpired() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.loader != nil && !d.closed && !d.holdDL {
		d.leaveDownloadLocked(resetPowerOn, "idle")
	}
}

// HoldDownload holds the chip in the ROM loader (as holding GPIO0 low
// through a reset does) until released: the firmware stops and the serial
// port answers esptool only; resets (FLASH_END, a stub's reboot, the idle
// return) land in the ROM loader again. HoldDownload(false) releases it
// and the firmware boots again. It needs the serial port.
func (d *Device) HoldDownload(on bool) error {
	if d.port == nil {
		return errors.New("emu: the device has no serial port")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("emu: device closed")
	}
	d.holdDL = on
	switch {
	case on && d.loader == nil:
		d.enterDownloadLocked()
	case !on && d.loader != nil:
		d.leaveDownloadLocked(resetPowerOn, "released")
	}
	return nil
}

// leaveDownloadLocked resets the chip out of download mode and boots.
func (d *Device) leaveDownloadLocked(cause resetCause, why string) {
	if d.idle != nil {
		d.idle.Stop()
		d.idle = nil
	}
	d.loader = nil
	d.setBaud(defaultBaud)
	d.log.Debug("Leaving download mode: "+why, console.Src("mosemu", 0))
	d.resetLocked(cause)
}

// defaultBaud is the UART rate of the ROM and of Mongoose OS after reset.
const defaultBaud = 115200

// setBaud paces the pty at baud when Options.BaudTiming is on.
func (d *Device) setBaud(baud int) {
	if d.opts.BaudTiming && d.port != nil {
		d.port.SetBaud(baud)
	}
}

// SetBaud implements romloader.BaudSetter.
func (t loaderTarget) SetBaud(baud int) { t.d.setBaud(baud) }

// InDownloadMode reports whether the ROM loader owns the UART.
func (d *Device) InDownloadMode() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.loader != nil
}

// loaderTarget is the chip as the ROM loader sees it.
type loaderTarget struct{ d *Device }

func (t loaderTarget) ESP32() bool         { return t.d.board.Arch == "esp32" }
func (t loaderTarget) Flash() flash.Device { return t.d.flash }

// EncryptedFlash is the download-mode encryption engine: the device key,
// whatever FLASH_CRYPT_CNT says, unless DISABLE_DL_ENCRYPT is burned.
func (t loaderTarget) EncryptedFlash() flash.Device {
	if t.d.efuses == nil {
		return nil
	}
	if v, _ := t.d.efuses.Value("DISABLE_DL_ENCRYPT"); v != 0 {
		return nil
	}
	return flashenc.NewView(t.d.flash, downloadKeys{t.d.efuses})
}

// downloadKeys always enables the engine with the efuse key.
type downloadKeys struct{ ef *efuse.Efuses }

func (k downloadKeys) FlashKey() (bool, [32]byte, uint8) {
	return true, k.ef.FlashEncryptionKey(), k.ef.FlashCryptConfig()
}

func (t loaderTarget) ReadReg(addr uint32) (uint32, bool) {
	if t.d.efuses != nil {
		return t.d.efuses.ReadReg(addr)
	}
	m := t.d.mac() // ESP8266 OTP MAC words
	switch addr {
	case 0x3FF00050:
		return uint32(m[5]) << 24, true
	case 0x3FF00054:
		return uint32(m[3])<<8 | uint32(m[4]), true
	case 0x3FF00058:
		return 0, true
	case 0x3FF0005C:
		return uint32(m[0])<<16 | uint32(m[1])<<8 | uint32(m[2]), true
	}
	return 0, false
}

// WriteReg reaches the efuse controller. Only a program command that burns
// bits touches the disk (real efuses are permanent the moment they are
// burnt); register writes and reads stay in memory.
func (t loaderTarget) WriteReg(addr, v uint32) bool {
	if t.d.efuses == nil {
		return false
	}
	burnt, ok := t.d.efuses.WriteRegBurn(addr, v)
	if !ok {
		return false
	}
	if burnt {
		if err := t.d.efuses.Save(t.d.efusePath()); err != nil {
			t.d.log.Error(fmt.Sprintf("efuse: saving %s: %v", EfuseFile, err), console.Src("mosemu", 0))
		}
	}
	return true
}
