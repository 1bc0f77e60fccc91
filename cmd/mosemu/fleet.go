package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/mosemu/mosemu/emu/fleet"
	"github.com/mosemu/mosemu/mqtt"
	devtls "github.com/mosemu/mosemu/tls"
	"github.com/spf13/cobra"
)

// fleetFlags are the fleet command's settings beyond fleet.Options.
type fleetFlags struct {
	o              fleet.Options
	quiet          bool
	brokerAddr     string
	externalBroker string
	shard          string
	manifest       string
	exitAfter      time.Duration
	connectWait    time.Duration
	maxFailures    int
	tele           fleet.Telemetry
	teleQoS        int
	churn          fleet.Churn
	probeRate      float64
	statsEvery     time.Duration
	metricsAddr    string
	uiAddr         string
}

func fleetCmd() *cobra.Command {
	var ff fleetFlags
	c := &cobra.Command{
		Use:   "fleet",
		Short: "Run many devices in one process, connected to an MQTT broker",
		Long: `Run --count devices, each with its own state (DIR/dev-NNNN), MAC, id
(dev-0001 is esp32_000001) and HTTP port, started at --rate devices per
second (0 = as fast as the machine allows) and connected to an MQTT broker:
an embedded one on --broker-addr (reached by the devices in-process), or
--external-broker. fleet.json (in --state unless --manifest) lists every
device with its ws://, http:// and mqtt:// addresses.

For load tests of a cloud back end, the devices can publish telemetry from
templates, be power-cycled and disconnected at given rates or in reconnect
storms, and a share of them can present wrong credentials or answer TLS
handshakes at board speed. A back-end client calls Sys.GetInfo on random
devices (--probe-rate) to measure RPC latency. Stats go to stderr every
--stats-every and, with --metrics, to a Prometheus endpoint.

A fleet too big for one machine is split with --shard i/n (--count is
then the whole fleet): ids and MACs stay unique across the shards, which
share one --external-broker.

Serves until SIGINT/SIGTERM (or --exit-after), then prints a summary. Exits
non-zero when more than --max-failures devices failed to start.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return runFleet(cmd, &ff) },
	}
	fl := c.Flags()
	o := &ff.o
	fl.IntVar(&o.Count, "count", 10, "number of devices (the whole fleet with --shard)")
	fl.IntVar(&o.First, "first", 1, "number of the first device (ids and MACs follow it); --shard computes it")
	fl.StringVar(&ff.shard, "shard", "", "run shard i of n (i/n, 0-based, e.g. a StatefulSet pod ordinal) of a --count fleet")
	fl.StringVar(&o.StateDir, "state", "state/fleet", "directory holding one state directory per device")
	fl.StringVar(&o.Arch, "arch", "", "board: esp32 or esp8266 (default esp32; fixed once a state exists)")
	fl.Float64Var(&o.Rate, "rate", 0, "device arrivals per second (0 = as fast as possible)")
	fl.IntVar(&o.Parallel, "parallel", 0, "devices booting at once when --rate is 0 (0 = 4 per CPU)")
	fl.StringVar(&o.HTTP, "http", "127.0.0.1:0", "host address of the devices' HTTP servers: port 0 picks free ports, port P gives device k of this process port P+k")
	fl.BoolVarP(&ff.quiet, "quiet", "q", true, "do not mirror the devices' console logs to stderr (--quiet=false mirrors them, each line prefixed with the device id)")
	fl.BoolVar(&o.Serial, "pty", false, "give every device a serial pty (2 more file descriptors each)")
	fl.BoolVar(&o.TLSLatency, "tls-latency", false, "answer TLS handshakes as slowly as the real board (ESP32 1-3 s, ESP8266 7-15 s)")
	fl.Float64Var(&o.TLSLatencyShare, "tls-latency-share", 0, "share of the devices (0..1) with --tls-latency")
	fl.BoolVar(&o.TLSDynamicBuffers, "mbedtls-dynamic-buffers", false, fmt.Sprintf("model mbedTLS with the dynamic-buffer patch (~%d KiB per idle TLS connection instead of ~%d KiB)", devtls.CostTLSDynamic>>10, devtls.CostTLSStatic>>10))
	fl.StringVar(&ff.brokerAddr, "broker-addr", "127.0.0.1:1883", "address of the embedded MQTT broker (another free port if taken)")
	fl.StringVar(&ff.externalBroker, "external-broker", "", "connect the devices to this MQTT broker (host:port) instead of an embedded one")
	fl.StringVar(&o.MQTTUser, "mqtt-user", "", "devices' MQTT user name (the embedded broker then requires it)")
	fl.StringVar(&o.MQTTPass, "mqtt-pass", "", "devices' MQTT password")
	fl.Float64Var(&o.WrongCredentials, "wrong-credentials", 0, "share of the devices (0..1) presenting a wrong MQTT password (needs --mqtt-user)")
	fl.StringVar(&ff.manifest, "manifest", "", "where to write the device list (default STATE/fleet.json)")
	fl.DurationVar(&ff.exitAfter, "exit-after", 0, "stop after this long (0 = run until interrupted)")
	fl.DurationVar(&ff.connectWait, "connect-wait", 30*time.Second, "after starting, wait this long at most for every device to connect to MQTT")
	fl.IntVar(&ff.maxFailures, "max-failures", 0, "devices allowed to fail to start before the exit status is non-zero")
	fl.StringVar(&ff.tele.Topic, "telemetry-topic", "devices/{{.ID}}/telemetry", "telemetry topic template (Go text/template: .ID .Number .N; rand, randf A B, randi A B, now)")
	fl.StringVar(&ff.tele.Payload, "telemetry-payload", `{"id":"{{.ID}}","n":{{.N}},"temp":{{randf 18 30 | printf "%.2f"}},"ts":{{now}}}`, "telemetry payload template")
	fl.DurationVar(&ff.tele.Interval, "telemetry-interval", 0, "each device publishes telemetry this often (0 = no telemetry)")
	fl.IntVar(&ff.teleQoS, "telemetry-qos", 0, "telemetry QoS (0, 1 or 2)")
	fl.Float64Var(&ff.churn.PowerCycleRate, "power-cycle-rate", 0, "power-cycle random devices at this rate (per second, fleet-wide)")
	fl.Float64Var(&ff.churn.DisconnectRate, "disconnect-rate", 0, "drop the MQTT connection of random devices at this rate (per second, fleet-wide)")
	fl.DurationVar(&ff.churn.StormEvery, "storm-every", 0, "reconnect storm: drop --storm-share of the devices at once this often")
	fl.Float64Var(&ff.churn.StormShare, "storm-share", 0.5, "share of the devices (0..1) a reconnect storm drops")
	fl.Float64Var(&ff.probeRate, "probe-rate", 5, "Sys.GetInfo calls per second over MQTT to random devices, for RPC latency (0 = none)")
	fl.DurationVar(&ff.statsEvery, "stats-every", 10*time.Second, "print stats this often (0 = never)")
	fl.StringVar(&ff.metricsAddr, "metrics", "", "serve Prometheus metrics on this host address (e.g. 127.0.0.1:9100) at /metrics")
	fl.StringVar(&ff.uiAddr, "ui", "", "serve the lab console (a list of the devices, a page for each) on this host address")
	return c
}

func runFleet(cmd *cobra.Command, ff *fleetFlags) error {
	o := &ff.o
	stderr := cmd.ErrOrStderr()
	stdout := cmd.OutOrStdout()
	shardName := ""
	if ff.shard != "" {
		if cmd.Flags().Changed("first") {
			return errors.New("fleet: --shard and --first both place the devices; give one")
		}
		s, err := fleet.ParseShard(ff.shard, o.Count)
		if err != nil {
			return err
		}
		o.First, o.Count, shardName = s.First, s.Count, s.String()
	}
	if o.First < 1 {
		return fmt.Errorf("fleet: --first %d: device numbers start at 1", o.First)
	}
	if ff.teleQoS < 0 || ff.teleQoS > 2 {
		return fmt.Errorf("fleet: --telemetry-qos %d: must be 0, 1 or 2", ff.teleQoS)
	}
	ff.tele.QoS = byte(ff.teleQoS)
	if ff.tele.Interval < 0 || ff.statsEvery < 0 || ff.exitAfter < 0 || ff.connectWait < 0 {
		return errors.New("fleet: durations must not be negative")
	}
	if ff.probeRate < 0 {
		return fmt.Errorf("fleet: --probe-rate %v: must be >= 0", ff.probeRate)
	}
	if ff.maxFailures < 0 {
		return errors.New("fleet: --max-failures must be >= 0")
	}
	if err := ff.churn.Check(); err != nil {
		return err
	}
	if err := o.Check(); err != nil {
		return err
	}
	var plan *fleet.TelemetryPlan
	if ff.tele.Interval > 0 {
		var err error
		if plan, err = fleet.ParseTelemetry(ff.tele); err != nil {
			return err
		}
	}
	if !ff.quiet {
		o.Console = stderr
	}
	if ff.externalBroker != "" {
		o.BrokerAddr = ff.externalBroker
	}
	if lim, err := fleet.RaiseFDLimit(*o); err == nil && !lim.Enough {
		fmt.Fprintf(stderr, "mosemu fleet: the open-file limit (%d, hard limit %d) holds about %d of %d devices (need ~%d);"+
			" raise the hard limit (ulimit -Hn, LimitNOFILE= in systemd, --ulimit nofile= in docker) or run fewer devices per process (--shard)."+
			" Starting anyway: the devices beyond it will fail.\n", lim.Soft, lim.Hard, lim.Devices(*o), o.Count, lim.Need)
	}

	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft memory limit near what the devices need (about 72 KiB
		// each live with an embedded broker: 43 KiB of heap, 29 KiB of
		// goroutine stacks, half of it the broker's side) keeps the garbage
		// of booting and of telemetry from doubling the peak RSS, with
		// room enough that the collector does not hold back 20,000
		// telemetry messages/s on 2 cores; GOMEMLIMIT overrides it.
		debug.SetMemoryLimit(int64(o.Count)*(110<<10) + 256<<20)
	}
	var metricsL net.Listener // bound before the devices take their ports
	if ff.metricsAddr != "" {
		l, err := net.Listen("tcp", ff.metricsAddr)
		if err != nil {
			return fmt.Errorf("fleet: --metrics: %w", err)
		}
		defer l.Close()
		metricsL = l
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.BrokerAddr == "" {
		bo := mqtt.BrokerOptions{User: o.MQTTUser, Pass: o.MQTTPass}
		b, err := mqtt.StartBrokerWith(ff.brokerAddr, bo)
		if err != nil && !cmd.Flags().Changed("broker-addr") { // the default port is taken: pick another
			b, err = mqtt.StartBrokerWith("127.0.0.1:0", bo)
		}
		if err != nil {
			return fmt.Errorf("embedded MQTT broker: %w", err)
		}
		defer b.Close()
		o.Broker = b
	}
	o.Progress = func(started, failed, total int, took time.Duration) {
		fmt.Fprintf(stderr, "mosemu fleet: starting: %d/%d up, %d failed, %.1f s\n", started, total, failed, took.Seconds())
	}
	f, err := fleet.Start(ctx, *o)
	if err != nil {
		return err
	}
	closed := false
	closeFleet := func() time.Duration {
		if closed {
			return 0
		}
		closed = true
		t := time.Now()
		f.Close()
		return time.Since(t)
	}
	defer closeFleet()
	manifest := ff.manifest
	if manifest == "" {
		manifest = filepath.Join(o.StateDir, "fleet.json")
	}
	if err := f.WriteManifest(manifest, shardName); err != nil {
		fmt.Fprintf(stderr, "mosemu fleet: writing %s: %v\n", manifest, err)
	}
	connected := f.WaitConnected(ctx, ff.connectWait)
	printFleetStart(stdout, f, connected, manifest, shardName)
	if ff.uiAddr != "" {
		ui, err := fleetUI(ff.uiAddr, f.Devices)
		if err != nil {
			return err
		}
		defer ui.Close()
	}

	stats := f.NewStats()
	stats.Take()
	bg, stopBG := context.WithCancel(ctx)
	done := make(chan struct{})
	var jobs int
	run := func(fn func()) { jobs++; go func() { defer func() { done <- struct{}{} }(); fn() }() }
	if plan != nil {
		run(func() { f.RunTelemetry(bg, plan) })
	}
	if ff.churn != (fleet.Churn{StormShare: ff.churn.StormShare}) {
		run(func() { f.RunChurn(bg, ff.churn) })
	}
	if ff.probeRate > 0 && len(f.Members) > 0 {
		id := "mosemu-probe"
		if shardName != "" {
			id = fmt.Sprintf("mosemu-probe-%d", o.First)
		}
		if p, err := f.StartProber(id); err != nil {
			fmt.Fprintln(stderr, "mosemu fleet:", err)
		} else {
			run(func() { p.Run(bg, ff.probeRate, 10*time.Second) })
		}
	}
	if metricsL != nil {
		l := metricsL
		srv := &http.Server{Handler: stats.MetricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
		fmt.Fprintf(stdout, "  Prometheus metrics: http://%s/metrics\n", l.Addr())
	}
	if ff.statsEvery > 0 {
		run(func() {
			t := time.NewTicker(ff.statsEvery)
			defer t.Stop()
			for {
				select {
				case <-bg.Done():
					return
				case <-t.C:
					fmt.Fprintf(stderr, "mosemu fleet: %s\n", stats.Take())
				}
			}
		})
	}
	began := time.Now()
	if ff.exitAfter > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(ff.exitAfter):
		}
	} else {
		<-ctx.Done()
	}
	stop() // a second Ctrl-C kills the process outright
	fmt.Fprintln(stderr, "mosemu fleet: stopping")
	stopBG()
	for range jobs {
		<-done
	}
	final := stats.Take()
	took := closeFleet()
	printFleetSummary(stdout, f, final, time.Since(began), took)
	if len(f.Failed) > ff.maxFailures {
		return fmt.Errorf("fleet: %d of %d devices failed to start (--max-failures %d)", len(f.Failed), o.Count, ff.maxFailures)
	}
	return nil
}

// printFleetStart lists the fleet: every device when there are few, the
// first and last otherwise (fleet.json always has them all).
func printFleetStart(w io.Writer, f *fleet.Fleet, connected int, manifest, shard string) {
	o := f.Opts
	where := ""
	if shard != "" {
		where = fmt.Sprintf(" (shard %s)", shard)
	}
	fmt.Fprintf(w, "mosemu fleet: %d devices%s started in %v, %d failed, %d/%d connected to MQTT %s\n",
		len(f.Members), where, f.Started.Round(time.Millisecond), len(f.Failed), connected, len(f.Members), f.BrokerAddr())
	fmt.Fprintf(w, "  devices %s..%s, state %s, memory %d MiB resident, %d file descriptors\n",
		fleet.DeviceID(o.Arch, o.First), fleet.DeviceID(o.Arch, o.First+o.Count-1), o.StateDir, fleet.ProcessRSS()>>20, fleet.ProcessFDs())
	const few = 100
	list := f.Members
	if len(list) > few {
		list = append(append([]*fleet.Member{}, list[:3]...), list[len(list)-1])
	}
	for i, m := range list {
		d := m.Device
		if len(f.Members) > few && i == 3 {
			fmt.Fprintf(w, "  ... %d more in %s\n", len(f.Members)-4, manifest)
		}
		line := fmt.Sprintf("  %s %s  ws://%s/rpc  http://%s/rpc", filepath.Base(m.Dir), d.DeviceID(), d.HTTPAddr(), d.HTTPAddr())
		if b := d.MQTTBroker(); b != "" {
			line += fmt.Sprintf("  mqtt://%s/%s", b, d.DeviceID())
		}
		if p := d.SerialPath(); p != "" {
			line += "  " + p
		}
		fmt.Fprintln(w, line)
	}
	for _, e := range f.Failed {
		fmt.Fprintln(w, "  failed:", e)
	}
	if down := len(f.Members) - connected; down > 0 {
		fmt.Fprintf(w, "  not connected to MQTT %s: %d devices", f.BrokerAddr(), down)
		shown := 0
		for _, m := range f.Members {
			if err := m.Device.MQTTError(); err != nil && shown < 3 {
				fmt.Fprintf(w, "; %s: %v", m.Device.DeviceID(), err)
				shown++
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  all devices: %s\n", manifest)
	if len(f.Members) > 0 {
		d := f.Members[0].Device
		fmt.Fprintf(w, "  e.g. mos --port ws://%s/rpc call Sys.GetInfo\n", d.HTTPAddr())
	}
}

// printFleetSummary is the report at exit.
func printFleetSummary(w io.Writer, f *fleet.Fleet, s fleet.Snapshot, ran, stopped time.Duration) {
	c := f.Counters()
	fmt.Fprintf(w, "mosemu fleet: summary: %d devices ran %v (started in %v, stopped in %v), %d failed to start\n",
		len(f.Members), ran.Round(time.Millisecond), f.Started.Round(time.Millisecond), stopped.Round(time.Millisecond), len(f.Failed))
	fmt.Fprintf(w, "  MQTT: %d/%d connected at the end; telemetry: %d sent (%.0f msg/s), %d errors, %d skipped\n",
		s.Connected, s.Devices, s.Telemetry, float64(s.Telemetry)/max(ran.Seconds(), 1e-9), s.TelemetryErr, s.TelemetrySkip)
	if s.RPCSent > 0 {
		all := c.AllLatencies()
		fmt.Fprintf(w, "  RPC probes: %d sent, %d answered, %d timed out; latency p50 %v, p99 %v\n", s.RPCSent, s.RPCOK, s.RPCTimeouts,
			fleet.Quantile(all, 0.5).Round(10*time.Microsecond), fleet.Quantile(all, 0.99).Round(10*time.Microsecond))
	}
	if s.PowerCycles+s.Disconnects > 0 {
		fmt.Fprintf(w, "  churn: %d power cycles, %d disconnects (%d storms)\n", s.PowerCycles, s.Disconnects, c.Storms.Load())
	}
	fmt.Fprintf(w, "  peak memory %d MiB resident\n", fleet.ProcessPeakRSS()>>20)
}
