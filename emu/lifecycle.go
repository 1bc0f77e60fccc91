package emu

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu/console"
)

// rebooter adapts the device to configs.Rebooter.
type rebooter struct{ d *Device }

func (r rebooter) Reboot(delay time.Duration) { r.d.ScheduleReboot(delay) }

// ScheduleReboot reboots the device after delay, as Sys.Reboot and
// Config.Set with reboot do. Requests arriving in the last 100 ms are
// refused with 418.
func (d *Device) ScheduleReboot(delay time.Duration) {
	d.rebootMu.Lock()
	d.rebootDue = time.Now().Add(delay)
	d.rebootMu.Unlock()
	d.log.Info(fmt.Sprintf("Rebooting in %d ms", delay.Milliseconds()), console.Src("mgos_system.c", 48))
	time.AfterFunc(delay, func() {
		d.rebootMu.Lock()
		d.rebootDue = time.Time{}
		d.rebootMu.Unlock()
		d.Reboot()
	})
}

func (d *Device) rebootAt() time.Time {
	d.rebootMu.Lock()
	defer d.rebootMu.Unlock()
	return d.rebootDue
}

// schema returns the sys_config schema shared by devices of this arch.
func (d *Device) schema() *configs.Schema {
	if d.opts.Schemas != nil {
		return d.opts.Schemas.For(d.board.Arch)
	}
	if d.ownSchema == nil {
		d.ownSchema = configs.NewSchema(d.board.Arch)
	}
	return d.ownSchema
}

// mac returns the factory MAC (efuses on ESP32, OTP on ESP8266).
func (d *Device) mac() [6]byte {
	if d.macFn != nil {
		return d.macFn()
	}
	var m [6]byte
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], d.id.Seed)
	h := sha256.Sum256(s[:])
	oui := [3]byte{0x24, 0x0A, 0xC4}
	if d.board.Arch == "esp8266" {
		oui = [3]byte{0x5C, 0xCF, 0x7F}
	}
	copy(m[:3], oui[:])
	copy(m[3:], h[:3])
	if fixed, ok := parseMAC(d.id.MAC); ok { // set at creation (a fleet's numbered devices)
		return fixed
	}
	return m
}

// fwID is the build id reported as fw_id.
func (d *Device) fwID() string { return "20260101-000000/" + FWVersion + "-mosemu" }

// DeviceID returns the running device.id, or "" when not running.
func (d *Device) DeviceID() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fw == nil || d.fw.cfg == nil {
		return ""
	}
	return d.fw.cfg.Get().String("device.id")
}

// StateDir returns the device's state directory.
func (d *Device) StateDir() string { return d.opts.StateDir }

// MQTTBroker returns the MQTT broker the running firmware uses, or "".
func (d *Device) MQTTBroker() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fw == nil || d.fw.mqtt == nil {
		return ""
	}
	return d.mqttServer(d.fw.cfg.Get())
}

// MQTTConnected reports whether the firmware's MQTT session is up.
func (d *Device) MQTTConnected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fw != nil && d.fw.mqtt != nil && d.fw.mqtt.Connected()
}
