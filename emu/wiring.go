package emu

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/i2c"
)

// Wire says how a part sits on the virtual board: the GPIOs its SDA and
// SCL lines are soldered to and its 7-bit I2C address. The firmware finds
// the part only when its i2c.* config drives those same pins.
type Wire struct {
	Part string `json:"part"` // "atecc608a"
	SDA  int    `json:"sda"`  // -1: not connected
	SCL  int    `json:"scl"`
	Addr int    `json:"addr"`
}

// PartATECC608A is the only part that can be wired so far.
const PartATECC608A = "atecc608a"

// DefaultWiring is how the ATECC608A is wired on a fresh board: on the
// ESP8266 as the Mongoose OS security guide's NodeMCU (SDA GPIO12 = D6, SCL
// GPIO14 = D5), on the ESP32 to the i2c lib's default pins (SDA 32, SCL 33),
// at the chip's factory address 0x60; both match the firmware's i2c.*
// defaults.
func DefaultWiring(arch string) []Wire {
	if arch == "esp8266" {
		return []Wire{{Part: PartATECC608A, SDA: 12, SCL: 14, Addr: 0x60}}
	}
	return []Wire{{Part: PartATECC608A, SDA: 32, SCL: 33, Addr: 0x60}}
}

// ParseWire parses "atecc608a:sda=12,scl=14,addr=0x60" (keys in any order,
// addr defaults to 0x60) or "atecc608a:none" (the part is not connected).
func ParseWire(s string) (Wire, error) {
	part, spec, ok := strings.Cut(s, ":")
	part = strings.ToLower(strings.TrimSpace(part))
	if !ok || part != PartATECC608A {
		return Wire{}, fmt.Errorf("wire %q: want %s:sda=N,scl=N[,addr=0xNN] or %s:none", s, PartATECC608A, PartATECC608A)
	}
	w := Wire{Part: part, SDA: -1, SCL: -1, Addr: 0x60}
	if strings.TrimSpace(spec) == "none" {
		return w, nil
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		n, err := strconv.ParseInt(strings.TrimSpace(v), 0, 32)
		if !ok || err != nil || seen[k] {
			return Wire{}, fmt.Errorf("wire %q: bad setting %q", s, kv)
		}
		seen[k] = true
		switch k {
		case "sda":
			w.SDA = int(n)
		case "scl":
			w.SCL = int(n)
		case "addr":
			w.Addr = int(n)
		default:
			return Wire{}, fmt.Errorf("wire %q: unknown setting %q (sda, scl, addr)", s, k)
		}
	}
	switch {
	case !seen["sda"] || !seen["scl"]:
		return Wire{}, fmt.Errorf("wire %q: sda and scl are required", s)
	case w.SDA < 0 || w.SDA > 39 || w.SCL < 0 || w.SCL > 39 || w.SDA == w.SCL:
		return Wire{}, fmt.Errorf("wire %q: sda and scl must be two different GPIOs 0..39", s)
	case w.Addr < 0x08 || w.Addr > 0x77:
		return Wire{}, fmt.Errorf("wire %q: addr must be a 7-bit address 0x08..0x77", s)
	}
	return w, nil
}

// String formats w as ParseWire reads it.
func (w Wire) String() string {
	if w.SDA < 0 || w.SCL < 0 {
		return w.Part + ":none"
	}
	return fmt.Sprintf("%s:sda=%d,scl=%d,addr=0x%02x", w.Part, w.SDA, w.SCL, w.Addr)
}

// wiring is the board's wiring: the state file's, or the default.
func (d *Device) wiring() []Wire {
	if d.id.Wiring != nil {
		return d.id.Wiring
	}
	return DefaultWiring(d.board.Arch)
}

// usableI2CPin reports whether the firmware can drive an open-drain I2C
// line on gpio (not a flash pin, not input-only).
func usableI2CPin(arch string, gpio int) bool {
	if gpio >= 6 && gpio <= 11 { // SPI flash on both chips
		return false
	}
	if arch == "esp8266" {
		return gpio >= 0 && gpio <= 16
	}
	return gpio >= 0 && gpio <= 33 && gpio != 20 && gpio != 24 && (gpio < 28 || gpio > 31)
}

// errI2CInit is the i2c lib's init failing: Mongoose OS stops its init.
var errI2CInit = errors.New("boot: i2c init failed; the firmware restarts")

// startI2C is the i2c lib's init (mgos_i2c_gpio.c on the ESP8266,
// esp32_i2c_master.c on the ESP32): with i2c.enable it sets up the global
// bus on i2c.sda_gpio/i2c.scl_gpio. Parts answer on it only if they are
// wired to exactly those pins. It returns nil when I2C is disabled.
func (d *Device) startI2C(cfg *configs.Config) (i2cBus, error) {
	if !cfg.Bool("i2c.enable") {
		return nil, nil
	}
	sda, scl, freq := cfg.Int("i2c.sda_gpio"), cfg.Int("i2c.scl_gpio"), cfg.Int("i2c.freq")
	src, invalid := console.Src("mgos_i2c_gpio.c", 215), "Invalid I2C GPIO settings"
	okLine := fmt.Sprintf("I2C GPIO init ok (SDA: %d, SCL: %d, freq: %d)", sda, scl, freq)
	if d.board.Arch != "esp8266" {
		src, invalid = console.Src("esp32_i2c_master.c", 345), "Invalid I2C settings"
		okLine = fmt.Sprintf("I2C%d init ok (SDA: %d, SCL: %d, freq: %d)", cfg.Int("i2c.unit_no"), sda, scl, freq)
	}
	// mgos_i2c_set_freq: the bit time must leave a positive delay.
	if freq <= 0 || 10_000_000/freq/2-4 <= 0 || sda == scl || !usableI2CPin(d.board.Arch, sda) || !usableI2CPin(d.board.Arch, scl) {
		d.log.Error(invalid, src)
		d.log.Error("i2c init failed", console.Src("mgos_deps_init.c", 0))
		return nil, errI2CInit
	}
	d.log.Info(okLine, src)
	bus := i2c.NewBus()
	for _, w := range d.wiring() {
		if w.Part == PartATECC608A && w.SDA == sda && w.SCL == scl {
			bus.Attach(byte(w.Addr), d.chip)
		}
	}
	if cfg.Bool("i2c.debug") {
		return &debugBus{Bus: bus, d: d}, nil
	}
	return bus, nil
}

// i2cBus is the firmware's global I2C bus.
type i2cBus interface {
	Write(addr byte, p []byte) error
	Read(addr byte, p []byte) (int, error)
}

// debugBus logs bus activity as mgos_i2c_gpio.c does with i2c.debug (at
// LL_DEBUG: seen with debug.level 3).
type debugBus struct {
	*i2c.Bus
	d *Device
}

func (b *debugBus) log(msg string) { b.d.log.Debug(msg, console.Src("mgos_i2c_gpio.c", 57)) }

func (b *debugBus) start(addr byte, mode byte, acked bool) {
	rw := byte(0)
	if mode == 'R' {
		rw = 1
	}
	b.log(fmt.Sprintf(" addr 0x%02x, mode %c => ab 0x%02x", addr, mode, addr<<1|rw))
	b.log(fmt.Sprintf(" sent 0x%02x, recd %s", addr<<1|rw, ackText(acked)))
}

func ackText(ack bool) string {
	if ack {
		return "ACK"
	}
	return "NAK"
}

// Write logs and performs a write transaction.
func (b *debugBus) Write(addr byte, p []byte) error {
	b.log(fmt.Sprintf("write %d to %d, stop? 1", len(p), addr))
	err := b.Bus.Write(addr, p)
	nack := errors.Is(err, i2c.ErrNACK)
	b.start(addr, 'W', !nack)
	if !nack {
		for _, c := range p {
			b.log(fmt.Sprintf(" sent 0x%02x, recd ACK", c))
		}
	}
	b.log(" stop")
	return err
}

// Read logs and performs a read transaction.
func (b *debugBus) Read(addr byte, p []byte) (int, error) {
	b.log(fmt.Sprintf("read %d from %d, start? 1, stop? 1", len(p), addr))
	n, err := b.Bus.Read(addr, p)
	nack := errors.Is(err, i2c.ErrNACK)
	b.start(addr, 'R', !nack)
	for i := 0; i < n && !nack; i++ {
		b.log(fmt.Sprintf(" recd 0x%02x, sent %s", p[i], ackText(i < n-1)))
	}
	b.log(" stop")
	return n, err
}
