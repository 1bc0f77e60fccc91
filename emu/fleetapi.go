package emu

import (
	"errors"
	"fmt"
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
