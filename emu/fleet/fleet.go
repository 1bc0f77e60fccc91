// Package fleet runs many emulated devices in one process, for load tests
// of cloud back ends and for workshops with one device per seat.
//
// Device number N (1-based, global across the shards of a fleet) lives in
// StateDir/dev-NNNN, has the factory MAC 24:0A:C4:xx:xx:xx whose last three
// bytes are N, and so the device id esp32_NNNNNN (esp8266_NNNNNN). Devices
// of one process reach an embedded broker through in-process pipes; each
// holds one listening socket (its HTTP/WebSocket server) and, only while
// its flash is being written, the flash image file.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/internal/atomicfile"
	"github.com/mosemu/mosemu/mqtt"
)

// MaxDevices is the largest device number: six decimal digits, written as
// the hexadecimal digits of the last three bytes of the MAC (device 1000 has
// the MAC 24:0A:C4:00:10:00 and the id esp32_001000), so that directory
// names, ids and MACs read the same number.
const MaxDevices = 999999

// Seed is the per-unit seed of device number n; its low three bytes are
// the MAC's last three (see MaxDevices).
func Seed(n int) uint64 {
	s, _ := strconv.ParseUint(strconv.Itoa(n), 16, 64)
	return s
}

// Options configure a fleet.
type Options struct {
	Count    int    // devices in this process
	First    int    // number of the first device (1-based); 0 means 1
	StateDir string // device N gets StateDir/dev-NNNN
	Arch     string // esp32 (default) or esp8266
	Rate     float64
	// HTTP is the host address of the devices' HTTP servers: port 0 gives
	// each device a free port, port P gives the k-th device of this process
	// port P+k.
	HTTP string
	// Serial gives every device a pty (one more descriptor pair each).
	Serial bool
	// Console, when not nil, receives every device's console log, each
	// line prefixed with the device id.
	Console io.Writer

	// Broker is an embedded broker the devices reach in-process; its
	// address is what host tools use. Ignored when BrokerAddr is set.
	Broker *mqtt.Broker
	// BrokerAddr is an external broker (host:port) every device connects to.
	BrokerAddr string
	// MQTTUser and MQTTPass are the devices' broker credentials.
	MQTTUser, MQTTPass string
	// WrongCredentials is the fraction of devices (0..1) that present a
	// wrong password: their connections are refused and retried.
	WrongCredentials float64

	TLSLatency        bool    // every device answers TLS handshakes at board speed
	TLSLatencyShare   float64 // or this fraction of them (0..1)
	TLSDynamicBuffers bool    // mbedTLS dynamic-buffer patch

	// Parallel bounds concurrent boots when Rate is 0 (0 = 4 per CPU).
	Parallel int
	// Progress, when set, is called about every ProgressEvery while starting.
	Progress      func(started, failed, total int, elapsed time.Duration)
	ProgressEvery time.Duration

	// Customize, when set, adjusts the options of the k-th device of this
	// process (0-based) before it is created (e.g. extra RPC services on
	// some devices).
	Customize func(k int, o *emu.Options)
}

// Check validates the options.
func (o *Options) Check() error {
	switch {
	case o.Count <= 0:
		return errors.New("fleet: --count must be positive")
	case o.First < 0:
		return errors.New("fleet: the first device number must be positive")
	case o.First+o.Count-1 > MaxDevices || o.first()+o.Count-1 > MaxDevices:
		return fmt.Errorf("fleet: device numbers stop at %d (six decimal digits in three MAC bytes)", MaxDevices)
	case o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0):
		return fmt.Errorf("fleet: --rate %v: must be a finite number >= 0", o.Rate)
	case !isFraction(o.WrongCredentials):
		return fmt.Errorf("fleet: wrong-credentials share %v: must be between 0 and 1", o.WrongCredentials)
	case !isFraction(o.TLSLatencyShare):
		return fmt.Errorf("fleet: TLS-latency share %v: must be between 0 and 1", o.TLSLatencyShare)
	case o.WrongCredentials > 0 && o.MQTTUser == "":
		return errors.New("fleet: a share of wrong credentials needs broker credentials (--mqtt-user) to get wrong")
	case o.Parallel < 0:
		return errors.New("fleet: parallel boots must be >= 0")
	}
	if o.HTTP != "" {
		if _, p, err := net.SplitHostPort(o.HTTP); err != nil {
			return fmt.Errorf("fleet: --http %q: %w", o.HTTP, err)
		} else if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 || (n > 0 && n+o.Count-1 > 65535) {
			return fmt.Errorf("fleet: --http %q: port must be 0 (any) or leave room for %d consecutive ports", o.HTTP, o.Count)
		}
	}
	return nil
}

func isFraction(f float64) bool { return f >= 0 && f <= 1 }

func (o *Options) first() int {
	if o.First == 0 {
		return 1
	}
	return o.First
}

// Selected reports whether device number n belongs to the share (0..1) of
// a fleet, spread evenly over the numbers (a golden-ratio sequence), so
// that every shard of a fleet has its part.
func Selected(n int, share float64) bool {
	if share <= 0 {
		return false
	}
	_, f := math.Modf(float64(n) * 0.6180339887498949)
	return f < share
}

// DirName is the state directory name of device number n.
func DirName(n int) string { return fmt.Sprintf("dev-%04d", n) }

// Member is one device of the fleet.
type Member struct {
	Number           int // global device number
	Dir              string
	Device           *emu.Device
	WrongCredentials bool
	TLSLatency       bool
}

// Failure is a device that did not start.
type Failure struct {
	Number int
	Dir    string
	Err    error
}

func (f Failure) Error() string { return fmt.Sprintf("device %d (%s): %v", f.Number, f.Dir, f.Err) }

// Fleet is a set of running devices.
type Fleet struct {
	Opts    Options
	Members []*Member     // in device-number order
	Devices []*emu.Device // the devices of Members, in the same order
	Failed  []Failure     // in device-number order
	Started time.Duration

	counters Counters
	closing  atomic.Bool
	stopSync chan struct{}
	unlock   func() // releases the state directory's lock
}

// SyncEvery is how often a fleet flushes its devices' state to the disk:
// devices write without fsync (emu.Options.DeferSync) and the fleet syncs
// the filesystem once for all of them.
const SyncEvery = 30 * time.Second

// syncLoop flushes the state now and then until Close.
func (f *Fleet) syncLoop() {
	t := time.NewTicker(SyncEvery)
	defer t.Stop()
	for {
		select {
		case <-f.stopSync:
			return
		case <-t.C:
			atomicfile.SyncFS(f.Opts.StateDir)
		}
	}
}

// syncNow flushes the state, waiting at most wait (the flush goes on in
// the background; the kernel finishes it even if the process exits).
func (f *Fleet) syncNow(wait time.Duration) {
	done := make(chan struct{})
	go func() { atomicfile.SyncFS(f.Opts.StateDir); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
	}
}

// BrokerAddr is the broker address host tools use to reach the devices.
func (f *Fleet) BrokerAddr() string {
	if f.Opts.BrokerAddr != "" {
		return f.Opts.BrokerAddr
	}
	if f.Opts.Broker != nil {
		return f.Opts.Broker.Addr()
	}
	return ""
}

// Start creates and boots the devices, at Rate devices per second or as
// fast as Parallel boots allow. A device that fails (a full disk, the file
// descriptor limit) is recorded in Failed and the others carry on. Start
// returns when every device has been started or failed, or ctx ends.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, err
	}
	// One lock for the fleet's state directory instead of one descriptor
	// per device (emu.Options.ParentLocked).
	unlock, err := emu.LockStateDir(o.StateDir)
	if err != nil {
		return nil, err
	}
	f := &Fleet{Opts: o, unlock: unlock}
	schemas := &configs.Schemas{}    // one read-only schema for the whole fleet
	sectors := flash.NewSectorPool() // one copy of the factory image's sectors
	factory := &emu.FactoryImages{}  // built once, written on every new device
	var console *lineWriter
	if o.Console != nil {
		console = &lineWriter{w: o.Console}
	}
	httpHost, httpPort := "127.0.0.1", 0
	if o.HTTP != "" {
		h, p, _ := net.SplitHostPort(o.HTTP)
		httpHost, httpPort = h, atoi(p)
	}
	var ports *portAllocator
	if httpPort == 0 && o.Count > 1000 { // past a thousand, the kernel's own choice slows down
		ports = newPortAllocator(httpHost)
	}
	first := o.first()
	members := make([]*Member, o.Count)
	fails := make([]error, o.Count)
	var started, failed atomic.Int64
	boot := func(k int) {
		n := first + k
		m := &Member{Number: n, Dir: filepath.Join(o.StateDir, DirName(n)),
			WrongCredentials: Selected(n, o.WrongCredentials), TLSLatency: o.TLSLatency || Selected(n, o.TLSLatencyShare)}
		port := 0
		if httpPort > 0 {
			port = httpPort + k
		} else if ports != nil {
			port = ports.take()
		}
		eo := emu.Options{Arch: o.Arch, StateDir: m.Dir, HTTPAddr: net.JoinHostPort(httpHost, strconv.Itoa(port)),
			Seed: Seed(n), MAC: fmt.Sprintf("5CCF7F%06d", n), Schemas: schemas, Serial: o.Serial, DeferSync: true, ParentLocked: true, SectorPool: sectors, Factory: factory,
			TLSHandshakeLatency: m.TLSLatency, TLSDynamicBuffers: o.TLSDynamicBuffers,
			MQTTUser: o.MQTTUser, MQTTPass: o.MQTTPass}
		if m.WrongCredentials {
			eo.MQTTPass = o.MQTTPass + "-wrong"
		}
		switch {
		case o.BrokerAddr != "":
			eo.MQTTBroker = o.BrokerAddr
		case o.Broker != nil:
			eo.MQTTBroker, eo.MQTTDial = o.Broker.Addr(), o.Broker.Dial
		}
		if console != nil {
			eo.Console = &prefixed{w: console, prefix: fmt.Sprintf("[%s] ", DeviceID(o.Arch, n))}
		}
		if o.Customize != nil {
			o.Customize(k, &eo)
		}
		d, err := emu.New(eo)
		if err == nil {
			err = d.Start(ctx)
			for try := 0; err != nil && addrInUse(err) && httpPort == 0 && ports != nil && try < 20; try++ {
				// Another process took the port since take checked it.
				d.Close()
				eo.HTTPAddr = net.JoinHostPort(httpHost, strconv.Itoa(ports.take()))
				if d, err = emu.New(eo); err == nil {
					err = d.Start(ctx)
				}
			}
			if err != nil && d != nil {
				d.Close()
			}
		}
		if err != nil {
			fails[k] = err
			failed.Add(1)
			return
		}
		m.Device = d
		members[k] = m
		started.Add(1)
	}

	t0 := time.Now()
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if o.Progress != nil {
		every := o.ProgressEvery
		if every <= 0 {
			every = time.Second
		}
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-progressDone:
					return
				case <-t.C:
					o.Progress(int(started.Load()), int(failed.Load()), o.Count, time.Since(t0))
				}
			}
		}()
	}
	parallel := o.Parallel
	if parallel == 0 {
		parallel = 4 * runtime.NumCPU()
	}
	if o.Rate > 0 {
		parallel = max(parallel, int(o.Rate)) // arrivals are not held up by slow boots
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	tick := time.Now()
	for k := 0; k < o.Count && ctx.Err() == nil; k++ {
		if interval > 0 {
			tick = tick.Add(interval)
			select {
			case <-time.After(time.Until(tick)):
			case <-ctx.Done():
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			boot(k)
		}()
	}
	wg.Wait()
	close(progressDone)
	progressWG.Wait()
	f.Started = time.Since(t0)
	for k := range members {
		switch {
		case members[k] != nil:
			f.Members = append(f.Members, members[k])
			f.Devices = append(f.Devices, members[k].Device)
		case fails[k] != nil:
			n := first + k
			f.Failed = append(f.Failed, Failure{Number: n, Dir: filepath.Join(o.StateDir, DirName(n)), Err: fails[k]})
		}
	}
	if o.Progress != nil {
		o.Progress(len(f.Members), len(f.Failed), o.Count, f.Started)
	}
	go atomicfile.SyncFS(o.StateDir) // the new devices' files, in the background
	f.stopSync = make(chan struct{})
	go f.syncLoop()
	return f, nil
}

// DeviceID is the device.id of device number n: the arch and the last
// three bytes of its MAC, which read as n.
func DeviceID(arch string, n int) string {
	if arch == "" {
		arch = "esp32"
	}
	return fmt.Sprintf("%s_%06d", arch, n%(MaxDevices+1))
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// Connected counts devices whose MQTT session is up.
func (f *Fleet) Connected() int {
	n := 0
	for _, m := range f.Members {
		if m.Device.MQTTConnected() {
			n++
		}
	}
	return n
}

// WaitConnected waits until every device that should connect (those with
// right credentials) is connected to MQTT, or the timeout passes or ctx
// ends, and returns the number connected.
func (f *Fleet) WaitConnected(ctx context.Context, timeout time.Duration) int {
	want := 0
	for _, m := range f.Members {
		if !m.WrongCredentials {
			want++
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		n := f.Connected()
		if n >= want || time.Now().After(deadline) || ctx.Err() != nil {
			return n
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// Close stops every device, in parallel, and flushes their state.
func (f *Fleet) Close() {
	if !f.closing.CompareAndSwap(false, true) {
		return
	}
	close(f.stopSync)
	defer f.unlock()
	defer f.syncNow(500 * time.Millisecond)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, m := range f.Members {
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); defer func() { <-sem }(); m.Device.Close() }()
	}
	wg.Wait()
}

// lineWriter serialises whole lines from many devices onto one writer.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// prefixed writes each console line of one device with its id in front.
type prefixed struct {
	w      *lineWriter
	prefix string
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	buf := make([]byte, 0, len(p.prefix)+len(b))
	buf = append(buf, p.prefix...)
	buf = append(buf, b...)
	if _, err := p.w.w.Write(buf); err != nil {
		return 0, err
	}
	return len(b), nil
}
