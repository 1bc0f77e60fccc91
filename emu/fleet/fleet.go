// Package fleet runs many emulated devices in one process, for load tests
// of cloud back ends and for workshops with one device per seat.
package fleet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu"
)

// Options configure a fleet.
type Options struct {
	Count      int
	StateDir   string  // each device gets StateDir/dev-NNNN
	Arch       string  // esp32 (default) or esp8266
	Rate       float64 // device starts per second; 0 = as fast as possible
	MQTTBroker string  // broker every device connects to ("" = none)
	HTTPHost   string  // host for the per-device HTTP servers (default 127.0.0.1)
	// Customize, when set, adjusts the options of device i before it is
	// created (e.g. extra RPC services on some devices).
	Customize func(i int, o *emu.Options)
}

// Fleet is a set of running devices.
type Fleet struct {
	Devices []*emu.Device
	Failed  []error
}

// Start creates and boots the devices at the requested arrival rate. It
// returns when every device has been started (or failed) or ctx ends.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if o.Count <= 0 {
		return nil, fmt.Errorf("fleet: count must be positive")
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, err
	}
	host := o.HTTPHost
	if host == "" {
		host = "127.0.0.1"
	}
	schemas := &configs.Schemas{} // one read-only schema for the whole fleet
	f := &Fleet{}
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	tick := time.Now()
	for i := 0; i < o.Count; i++ {
		if ctx.Err() != nil {
			break
		}
		if interval > 0 {
			tick = tick.Add(interval)
			time.Sleep(time.Until(tick))
		}
		do := emu.Options{
			Arch: o.Arch, StateDir: filepath.Join(o.StateDir, fmt.Sprintf("dev-%04d", i)),
			HTTPAddr: host + ":0", Seed: uint64(i + 1), Schemas: schemas, MQTTBroker: o.MQTTBroker,
		}
		if o.Customize != nil {
			o.Customize(i, &do)
		}
		d, err := emu.New(do)
		if err == nil {
			if err = d.Start(ctx); err != nil {
				d.Close()
			}
		}
		if err != nil {
			f.Failed = append(f.Failed, fmt.Errorf("device %d: %w", i, err))
			continue
		}
		f.Devices = append(f.Devices, d)
	}
	return f, nil
}

// Connected counts devices whose MQTT session is up.
func (f *Fleet) Connected() int {
	n := 0
	for _, d := range f.Devices {
		if d.MQTTConnected() {
			n++
		}
	}
	return n
}

// WaitConnected waits until every device is connected to MQTT or the
// timeout passes, and returns the number connected.
func (f *Fleet) WaitConnected(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		n := f.Connected()
		if n == len(f.Devices) || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close stops every device.
func (f *Fleet) Close() {
	var wg sync.WaitGroup
	for _, d := range f.Devices {
		wg.Add(1)
		go func() { defer wg.Done(); d.Close() }()
	}
	wg.Wait()
}
