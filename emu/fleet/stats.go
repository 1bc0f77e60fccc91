package fleet

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/internal/atomicfile"
)

// Snapshot is the fleet's state at one instant, with rates over the time
// since the previous snapshot.
type Snapshot struct {
	At         time.Time
	Devices    int
	Failed     int
	Connected  int
	Telemetry  int64   // messages sent, total
	MsgsPerSec float64 // telemetry messages per second in the window
	// BrokerIn is the embedded broker's PUBLISH count (every client), or -1.
	BrokerIn       int64
	BrokerInPerSec float64
	RPCSent        int64
	RPCOK          int64
	RPCTimeouts    int64
	RPCP50, RPCP99 time.Duration // round trips of the window's probe calls
	RPCSum         time.Duration // all probe round trips, total
	PowerCycles    int64
	Disconnects    int64
	TelemetryErr   int64
	TelemetrySkip  int64
	RSS            int64 // resident set size of the process, bytes (Linux)
	FDs            int   // open descriptors of the process (Linux), -1 unknown
	Goroutines     int
}

// Stats computes snapshots; each call closes a window.
type Stats struct {
	f    *Fleet
	mu   sync.Mutex
	last Snapshot // at the start of the current window
}

// NewStats starts the stats windows now.
func (f *Fleet) NewStats() *Stats {
	s := &Stats{f: f}
	s.last = Snapshot{At: time.Now(), Telemetry: f.counters.TelemetrySent.Load(), BrokerIn: f.brokerIn()}
	return s
}

func (f *Fleet) brokerIn() int64 {
	if f.Opts.BrokerAddr == "" && f.Opts.Broker != nil {
		return f.Opts.Broker.Stats().MessagesReceived
	}
	return -1
}

// Take closes the current window and returns its snapshot.
func (s *Stats) Take() Snapshot { return s.snapshot(true) }

// Peek returns the snapshot of the window so far without closing it.
func (s *Stats) Peek() Snapshot { return s.snapshot(false) }

func (s *Stats) snapshot(closeWindow bool) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.f.counters
	now := time.Now()
	lat := c.latency.peek()
	if closeWindow {
		lat = c.latency.take()
	}
	sum, _ := c.latency.total()
	snap := Snapshot{At: now, Devices: len(s.f.Members), Failed: len(s.f.Failed), Connected: s.f.Connected(),
		Telemetry: c.TelemetrySent.Load(), BrokerIn: s.f.brokerIn(),
		RPCSent: c.RPCSent.Load(), RPCOK: c.RPCOK.Load(), RPCTimeouts: c.RPCTimeouts.Load(),
		RPCP50: Quantile(lat, 0.5), RPCP99: Quantile(lat, 0.99), RPCSum: sum,
		PowerCycles: c.PowerCycles.Load(), Disconnects: c.Disconnects.Load(),
		TelemetryErr: c.TelemetryErrors.Load(), TelemetrySkip: c.TelemetrySkipped.Load(),
		RSS: ProcessRSS(), FDs: ProcessFDs(), Goroutines: runtime.NumGoroutine()}
	if dt := now.Sub(s.last.At).Seconds(); dt > 0 {
		snap.MsgsPerSec = float64(snap.Telemetry-s.last.Telemetry) / dt
		if snap.BrokerIn >= 0 {
			snap.BrokerInPerSec = float64(snap.BrokerIn-s.last.BrokerIn) / dt
		}
	}
	if closeWindow {
		s.last = snap
	}
	return snap
}

// String is the console stats line.
func (s Snapshot) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d connected, telemetry %.0f msg/s", s.Connected, s.Devices, s.MsgsPerSec)
	if s.BrokerIn >= 0 {
		fmt.Fprintf(&b, ", broker in %.0f msg/s", s.BrokerInPerSec)
	}
	if s.RPCSent > 0 {
		fmt.Fprintf(&b, ", RPC p50 %v p99 %v (%d ok, %d timed out)", s.RPCP50.Round(10*time.Microsecond), s.RPCP99.Round(10*time.Microsecond), s.RPCOK, s.RPCTimeouts)
	}
	if s.PowerCycles+s.Disconnects > 0 {
		fmt.Fprintf(&b, ", %d power cycles, %d disconnects", s.PowerCycles, s.Disconnects)
	}
	if s.TelemetryErr+s.TelemetrySkip > 0 {
		fmt.Fprintf(&b, ", %d publish errors, %d skipped", s.TelemetryErr, s.TelemetrySkip)
	}
	fmt.Fprintf(&b, "; RSS %d MiB, %d fds, %d goroutines", s.RSS>>20, s.FDs, s.Goroutines)
	return b.String()
}

// WritePrometheus writes the snapshot in the Prometheus text exposition
// format (version 0.0.4).
func (s Snapshot) WritePrometheus(w io.Writer) error {
	bw := bufio.NewWriter(w)
	metric := func(name, typ, help string, v float64, labels ...string) {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		fmt.Fprintf(bw, "%s%s %s\n", name, strings.Join(labels, ""), strconv.FormatFloat(v, 'g', -1, 64))
	}
	metric("mosemu_fleet_devices", "gauge", "Devices running in this process.", float64(s.Devices))
	metric("mosemu_fleet_devices_failed", "gauge", "Devices that failed to start.", float64(s.Failed))
	metric("mosemu_fleet_mqtt_connected", "gauge", "Devices with an MQTT session up.", float64(s.Connected))
	metric("mosemu_fleet_telemetry_messages_total", "counter", "Telemetry messages published by the devices.", float64(s.Telemetry))
	metric("mosemu_fleet_telemetry_errors_total", "counter", "Telemetry publishes that failed.", float64(s.TelemetryErr))
	metric("mosemu_fleet_telemetry_skipped_total", "counter", "Telemetry publishes skipped because the publishers were behind.", float64(s.TelemetrySkip))
	if s.BrokerIn >= 0 {
		metric("mosemu_fleet_broker_messages_received_total", "counter", "PUBLISH packets received by the embedded broker.", float64(s.BrokerIn))
	}
	metric("mosemu_fleet_power_cycles_total", "counter", "Device power cycles caused by churn.", float64(s.PowerCycles))
	metric("mosemu_fleet_disconnects_total", "counter", "MQTT disconnects caused by churn and storms.", float64(s.Disconnects))
	metric("mosemu_fleet_rpc_timeouts_total", "counter", "Probe RPC calls left unanswered.", float64(s.RPCTimeouts))
	fmt.Fprintf(bw, "# HELP mosemu_fleet_rpc_latency_seconds Round trip of Sys.GetInfo probe calls over MQTT (quantiles of the last stats window).\n# TYPE mosemu_fleet_rpc_latency_seconds summary\n")
	fmt.Fprintf(bw, "mosemu_fleet_rpc_latency_seconds{quantile=\"0.5\"} %s\n", strconv.FormatFloat(s.RPCP50.Seconds(), 'g', -1, 64))
	fmt.Fprintf(bw, "mosemu_fleet_rpc_latency_seconds{quantile=\"0.99\"} %s\n", strconv.FormatFloat(s.RPCP99.Seconds(), 'g', -1, 64))
	fmt.Fprintf(bw, "mosemu_fleet_rpc_latency_seconds_sum %s\n", strconv.FormatFloat(s.RPCSum.Seconds(), 'g', -1, 64))
	fmt.Fprintf(bw, "mosemu_fleet_rpc_latency_seconds_count %d\n", s.RPCOK)
	metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", float64(s.RSS))
	metric("process_open_fds", "gauge", "Number of open file descriptors.", float64(s.FDs))
	metric("go_goroutines", "gauge", "Number of goroutines that currently exist.", float64(s.Goroutines))
	return bw.Flush()
}

// MetricsHandler serves the fleet's state at /metrics, as of the request.
func (s *Stats) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		s.Peek().WritePrometheus(w)
	})
	return mux
}

// ProcessRSS returns the resident set size of this process in bytes (0
// where /proc is missing).
func ProcessRSS() int64 { return procStatusKiB("VmRSS:") << 10 }

// ProcessPeakRSS returns the peak resident set size in bytes.
func ProcessPeakRSS() int64 { return procStatusKiB("VmHWM:") << 10 }

func procStatusKiB(key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// ProcessFDs counts the open descriptors of this process, -1 if unknown.
func ProcessFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory being read
}

// ManifestDevice is one device in fleet.json.
type ManifestDevice struct {
	Number           int    `json:"number"`
	ID               string `json:"id"`
	MAC              string `json:"mac"`
	StateDir         string `json:"state_dir"`
	HTTP             string `json:"http"`
	WS               string `json:"ws"`
	MQTT             string `json:"mqtt,omitempty"`
	PTY              string `json:"pty,omitempty"`
	WrongCredentials bool   `json:"wrong_credentials,omitempty"`
	TLSLatency       bool   `json:"tls_latency,omitempty"`
}

// ManifestFailure is a device that did not start.
type ManifestFailure struct {
	Number   int    `json:"number"`
	StateDir string `json:"state_dir"`
	Error    string `json:"error"`
}

// Manifest is fleet.json: where every device of this process is.
type Manifest struct {
	Broker  string            `json:"broker,omitempty"`
	First   int               `json:"first"`
	Count   int               `json:"count"`
	Shard   string            `json:"shard,omitempty"`
	Devices []ManifestDevice  `json:"devices"`
	Failed  []ManifestFailure `json:"failed,omitempty"`
}

// Manifest describes the running fleet.
func (f *Fleet) Manifest(shard string) Manifest {
	m := Manifest{Broker: f.BrokerAddr(), First: f.Opts.first(), Count: f.Opts.Count, Shard: shard, Devices: []ManifestDevice{}}
	for _, mb := range f.Members {
		d := mb.Device
		id := d.DeviceID()
		md := ManifestDevice{Number: mb.Number, ID: id, MAC: d.MAC(), StateDir: mb.Dir, HTTP: "http://" + d.HTTPAddr() + "/rpc",
			WS: "ws://" + d.HTTPAddr() + "/rpc", PTY: d.SerialPath(), WrongCredentials: mb.WrongCredentials, TLSLatency: mb.TLSLatency}
		if b := d.MQTTBroker(); b != "" {
			md.MQTT = "mqtt://" + b + "/" + id
		}
		m.Devices = append(m.Devices, md)
	}
	for _, fl := range f.Failed {
		m.Failed = append(m.Failed, ManifestFailure{Number: fl.Number, StateDir: fl.Dir, Error: fl.Err.Error()})
	}
	return m
}

// WriteManifest writes the manifest as JSON to path, atomically.
func (f *Fleet) WriteManifest(path, shard string) error {
	b, err := jsonIndent(f.Manifest(shard))
	if err != nil {
		return err
	}
	// At the descriptor limit, the flash images written while booting
	// close within flash.IdleClose and free what writing the file needs.
	for deadline := time.Now().Add(3 * flash.IdleClose); ; time.Sleep(100 * time.Millisecond) {
		err = atomicfile.Write(path, b)
		if !errors.Is(err, syscall.EMFILE) || time.Now().After(deadline) {
			return err
		}
	}
}

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}
