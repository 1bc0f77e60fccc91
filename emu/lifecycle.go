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
// refused with 418. As on the firmware, however many reboots are asked
// for, the device reboots once: at the earliest time asked, and only if it
// has not rebooted for another reason meanwhile.
func (d *Device) ScheduleReboot(delay time.Duration) {
	due := time.Now().Add(delay)
	d.log.Info(fmt.Sprintf("Rebooting in %d ms", delay.Milliseconds()), console.Src("mgos_system.c", 48))
	d.rebootMu.Lock()
	defer d.rebootMu.Unlock()
	if d.rebootTimer != nil {
		if !d.rebootDue.After(due) {
			return // an earlier reboot is already due
		}
		d.rebootTimer.Stop()
	}
	d.rebootDue = due
	gen := d.bootGen.Load()
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		d.protect("reboot timer", func() {
			d.rebootMu.Lock()
			if d.rebootTimer != t {
				d.rebootMu.Unlock()
				return // replaced by an earlier one
			}
			d.rebootTimer, d.rebootDue = nil, time.Time{}
			d.rebootMu.Unlock()
			if d.bootGen.Load() == gen {
				d.firmwareRestart()
			}
		})
	})
	d.rebootTimer = t
}

// cancelReboot drops a pending reboot (the device is stopping anyway).
func (d *Device) cancelReboot() {
	d.rebootMu.Lock()
	defer d.rebootMu.Unlock()
	if d.rebootTimer != nil {
		d.rebootTimer.Stop()
		d.rebootTimer, d.rebootDue = nil, time.Time{}
	}
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
func (d *Device) fwID() string { return FWBuildID }

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
