package emu

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mosemu/mosemu/internal/atomicfile"
)

// ErrMQTTDown is returned by MQTTPublish while the device has no MQTT
// session.
var ErrMQTTDown = errors.New("emu: MQTT not connected")

// MQTTPublish publishes from the device's own MQTT session, as application
// code on the device (mgos_mqtt_pub) would: the telemetry of a fleet.
func (d *Device) MQTTPublish(topic string, qos byte, payload []byte) error {
	d.mu.Lock()
	var fw *firmware
	if d.fw != nil && d.fw.mqtt != nil && d.fw.mqtt.Connected() {
		fw = d.fw
	}
	d.mu.Unlock()
	if fw == nil {
		return ErrMQTTDown
	}
	return fw.mqtt.Publish(topic, qos, false, payload)
}

// DropMQTT closes the network connection under the device's MQTT session,
// as a Wi-Fi outage or a broker-side disconnect would; the firmware
// reconnects with its configured back-off. It reports whether a connection
// was dropped.
func (d *Device) DropMQTT() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fw == nil || d.fw.mqtt == nil {
		return false
	}
	return d.fw.mqtt.Drop()
}

// OpenFiles counts the file descriptors the device holds now for its state
// (the flash image is open only while being written).
func (d *Device) OpenFiles() int { return d.flash.OpenFiles() }

// MAC returns the factory MAC, e.g. "240AC4000001".
func (d *Device) MAC() string { return fmt.Sprintf("%X", d.mac()) }

// MQTTError returns why the device's MQTT session is down (the last failed
// attempt or lost connection), or nil while it is up or not configured.
func (d *Device) MQTTError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fw == nil || d.fw.mqtt == nil {
		return nil
	}
	return d.fw.mqtt.LastError()
}

// precreateIdentity writes a new device's identity without fsync (see
// Options.DeferSync); loadIdentity then finds it.
func precreateIdentity(opts Options) error {
	path := filepath.Join(opts.StateDir, StateFile)
	if opts.Seed == 0 {
		return nil // a random seed: loadIdentity picks it
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.MkdirAll(opts.StateDir, 0o755); err != nil {
		return err
	}
	return atomicfile.WriteDeferred(path, mustJSON(newIdentity(opts)))
}

// saveNewEfuses writes a new chip's factory efuses.
func (d *Device) saveNewEfuses() error {
	if !d.opts.DeferSync {
		return d.efuses.Save(d.efusePath())
	}
	b, err := d.efuses.MarshalBinary()
	if err != nil {
		return err
	}
	return atomicfile.WriteDeferred(d.efusePath(), b)
}

// newIdentity is the identity of a new device made with opts.
func newIdentity(opts Options) Identity {
	id := Identity{Arch: orDefault(opts.Arch, "esp32"), Seed: opts.Seed, FlashEncryption: opts.FlashEncryption}
	if b, _ := BoardFor(id.Arch); !b.HasEfuses {
		id.MAC = opts.MAC
	}
	return id
}

// parseMAC parses 12 hex digits.
func parseMAC(s string) ([6]byte, bool) {
	var m [6]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 6 {
		return m, false
	}
	copy(m[:], b)
	return m, true
}

// LockStateDir takes the lock a device takes on its state directory (see
// ErrStateInUse) for dir, and returns its release: a fleet locks its state
// directory once for all its devices (Options.ParentLocked).
func LockStateDir(dir string) (release func(), err error) {
	l, err := lockState(dir)
	if err != nil {
		return nil, err
	}
	return l.unlock, nil
}
