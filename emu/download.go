package emu

import (
	"bytes"
	"sync"
	"time"

	"github.com/mosemu/mosemu/efuse"
	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/flashenc"
	"github.com/mosemu/mosemu/emu/romloader"
)

// syncStart begins a ROM loader SYNC request: SLIP END, direction 0, SYNC.
var syncStart = []byte{0xC0, 0x00, romloader.CmdSync}

// downloadIdle is how long the ROM loader waits without input before the
// emulated board is reset back into the firmware (a pty cannot carry the
// RTS pulse tools use for that). An RPC handshake from mos (`"""\x04"""`)
// resets it at once.
const downloadIdle = 10 * time.Second

// rpcHandshake is what mos sends to reach the firmware's RPC channel.
var rpcHandshake = []byte("\"\"\"\x04\"\"\"")

// uartInput routes serial input to the firmware's RPC channel until a ROM
// loader SYNC arrives, which resets the chip into download mode (the
// emulated equivalent of tools pulling GPIO0 low with DTR/RTS).
func (d *Device) uartInput(feed func([]byte)) func([]byte) {
	var tail []byte
	return func(b []byte) {
		buf := append(tail, b...)
		if i := bytes.Index(buf, syncStart); i >= 0 {
			tail = nil
			// From this byte on, input belongs to the ROM loader: hold it
			// until the loader is attached so nothing reaches the firmware.
			in := &heldInput{buf: append([]byte(nil), buf[i:]...)}
			d.port.SetConsumer(in.feed)
			go d.enterDownload(in)
			return
		}
		tail = append([]byte(nil), buf[max(0, len(buf)-2):]...)
		feed(b)
	}
}

// heldInput queues serial input until a consumer is attached.
type heldInput struct {
	mu   sync.Mutex
	buf  []byte
	sink func([]byte)
}

func (h *heldInput) feed(b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sink != nil {
		h.sink(b)
		return
	}
	h.buf = append(h.buf, b...)
}

// attach hands the queued bytes, then every later byte, to sink.
func (h *heldInput) attach(sink func([]byte)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sink = sink
	if len(h.buf) > 0 {
		sink(h.buf)
		h.buf = nil
	}
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

func (t loaderTarget) WriteReg(addr, v uint32) bool {
	if t.d.efuses == nil || !t.d.efuses.WriteReg(addr, v) {
		return false
	}
	if addr == efuse.BaseAPB+0x104 || addr == efuse.BaseAHB+0x104 { // CMD: a burn may have happened
		t.d.efuses.Save(t.d.efusePath())
	}
	return true
}

func (d *Device) heldInDownload() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.holdDL
}

// enterDownload stops the firmware and runs the ROM loader on the UART
// until it exits or goes idle, then boots the firmware again.
func (d *Device) enterDownload(in *heldInput) {
	d.mu.Lock()
	if d.closed || d.port == nil || d.downloading {
		d.mu.Unlock()
		return
	}
	d.downloading = true
	d.stopLocked()
	d.mu.Unlock()

	port := d.port
	port.SetSoftwareFlowControl(false) // SLIP data contains 0x11/0x13
	l := romloader.New(loaderTarget{d}, port)
	var once sync.Once
	done := make(chan struct{})
	activity := make(chan struct{}, 1)
	feed := func(b []byte) {
		select {
		case activity <- struct{}{}:
		default:
		}
		if _, ok := l.Feed(b); ok || bytes.Contains(b, rpcHandshake) {
			once.Do(func() { close(done) })
		}
	}
	in.attach(feed)
	for idle := time.NewTimer(downloadIdle); ; {
		select {
		case <-done:
		case <-activity:
			idle.Reset(downloadIdle)
			continue
		case <-idle.C:
			if d.heldInDownload() {
				idle.Reset(downloadIdle)
				continue
			}
		case <-d.releaseDL:
		}
		break
	}
	port.SetConsumer(nil)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.downloading = false
	d.holdDL = false
	if d.closed {
		return
	}
	d.log.Debug("Leaving download mode", console.Src("mosemu", 0))
	d.bootLocked()
}
