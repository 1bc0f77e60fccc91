package emu

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/mosemu/mosemu/emu/console"
)

// The supervisor: everything that runs on behalf of one device (RPC
// handlers on every channel, MQTT callbacks, HTTP handlers, timers) runs
// under protect. A panic there is this device's firmware crash, never the
// process's: the device prints what the firmware prints on an unhandled
// exception, counts the crash, and reboots; other devices in the process
// carry on.

// protect runs f under the device's supervisor.
func (d *Device) protect(where string, f func()) {
	defer d.recoverCrash(where)
	f()
}

// protected returns feed wrapped by protect (for input callbacks).
func (d *Device) protected(where string, feed func([]byte)) func([]byte) {
	return func(b []byte) { d.protect(where, func() { feed(b) }) }
}

// recoverCrash is deferred by supervised code: it turns a panic into a
// device crash.
func (d *Device) recoverCrash(where string) {
	if v := recover(); v != nil {
		d.crash(where, v, debug.Stack())
	}
}

// protectHTTP runs an HTTP handler under the supervisor. The client of the
// crashing request sees its connection drop, as with a real board.
func (d *Device) protectHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v != http.ErrAbortHandler {
				d.crash("HTTP "+r.Method+" "+r.URL.Path, v, debug.Stack())
			}
			panic(http.ErrAbortHandler) // net/http closes the connection quietly
		}()
		h.ServeHTTP(w, r)
	})
}

// Crashes returns how many times the firmware crashed since the process
// started (also reported as "crashes" by Sys.GetInfo once non-zero).
func (d *Device) Crashes() int64 { return d.crashes.Load() }

// crashReport prints what the firmware prints on an unhandled exception
// (with the Go stack as the core dump) and counts the crash.
func (d *Device) crashReport(where string, v any, stack []byte) {
	n := d.crashes.Add(1)
	msg := console.Sanitize(fmt.Sprint(v))
	where = console.Sanitize(where)
	if d.board.Arch == "esp8266" {
		d.out.Print("", fmt.Sprintf("Fatal exception (Go panic in %s: %s)", where, msg))
	} else {
		d.out.Print("", fmt.Sprintf("Guru Meditation Error: Core  0 panic'ed (Go panic in %s: %s). Exception was unhandled.", where, msg))
	}
	d.out.Print("", "--- BEGIN CORE DUMP ---")
	for _, l := range strings.Split(strings.TrimRight(string(stack), "\n"), "\n") {
		d.out.Print("", console.Sanitize(strings.ReplaceAll(l, "\t", "  ")))
	}
	d.out.Print("", "---- END CORE DUMP ----")
	d.log.Error(fmt.Sprintf("Firmware crash #%d in %s: %s", n, where, msg), console.Src("mosemu", 0), "finding", "crash")
}

// crash reports a crash and reboots the device (once, however many
// handlers of the same boot crash).
func (d *Device) crash(where string, v any, stack []byte) {
	d.crashReport(where, v, stack)
	d.out.Print("", "Rebooting...")
	gen := d.bootGen.Load()
	go d.protect("reboot after crash", func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.closed || d.fw == nil || d.bootGen.Load() != gen {
			return // halted, closed, or already rebooted (another crash of the same boot)
		}
		d.resetLocked(resetSoftwareCPU) // rst:0xc (SW_CPU_RESET), as after a panic
	})
}

// bootSupervised runs boot; a panic while booting is reported as a crash
// and leaves the device halted (no boot loop spinning a host core).
func (d *Device) bootSupervised() (fw *firmware, err error) {
	defer func() {
		if v := recover(); v != nil {
			d.crashReport("boot", v, debug.Stack())
			fw, err = nil, errBootCrashed
		}
	}()
	return d.boot()
}

// errBootCrashed is the boot error when the firmware panicked while booting.
var errBootCrashed = errors.New("boot: firmware crashed while booting")

// Code of the device that runs inside TLS handshakes, on goroutines of the
// HTTP server or of the MQTT client library, runs under the supervisor too:
// a panic there is the device's crash and fails that handshake.

// errCrashedTLS fails a handshake whose device code crashed.
var errCrashedTLS = errors.New("firmware crashed during the TLS handshake")

// supervisedSigner runs a device-held key (ATCA:N) under the supervisor.
type supervisedSigner struct {
	s crypto.Signer
	d *Device
}

func (s supervisedSigner) Public() crypto.PublicKey { return s.s.Public() }

// ChipSlot is the ATCA slot of the key (tls12.ChipKey), -1 if none.
func (s supervisedSigner) ChipSlot() int {
	if k, ok := s.s.(interface{ ChipSlot() int }); ok {
		return k.ChipSlot()
	}
	return -1
}

func (s supervisedSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	err = errCrashedTLS
	s.d.protect("TLS signature", func() { sig, err = s.s.Sign(rand, digest, opts) })
	return sig, err
}
