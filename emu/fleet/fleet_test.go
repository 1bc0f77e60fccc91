package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/mqtt"
)

func startBroker(t testing.TB, o mqtt.BrokerOptions) *mqtt.Broker {
	t.Helper()
	b, err := mqtt.StartBrokerWith("127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func startFleet(t testing.TB, o Options) *Fleet {
	t.Helper()
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	f, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	if len(f.Failed) != 0 {
		t.Fatal(f.Failed)
	}
	return f
}

// backEnd is an MQTT client on the broker's TCP address, as mos or a
// cloud back end would connect.
func backEnd(t *testing.T, addr, id, user, pass string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(user).SetPassword(pass))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("back end connecting to %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func TestFleetAnswersRPCOverMQTT(t *testing.T) {
	b := startBroker(t, mqtt.BrokerOptions{})
	f := startFleet(t, Options{Count: 12, Broker: b, Rate: 200})
	if n := f.WaitConnected(context.Background(), 20*time.Second); n != 12 {
		t.Fatalf("%d/12 connected", n)
	}
	for i, m := range f.Members {
		want := fmt.Sprintf("esp32_%06d", i+1)
		if id := m.Device.DeviceID(); id != want || filepath.Base(m.Dir) != fmt.Sprintf("dev-%04d", i+1) {
			t.Fatalf("device %d: id %s in %s, want %s in dev-%04d", i+1, id, m.Dir, want, i+1)
		}
	}
	if mac := f.Members[9].Device.MAC(); mac != "240AC4000010" {
		t.Fatalf("device 10 MAC %s, want 240AC4000010", mac)
	}
	c := backEnd(t, b.Addr(), "mos-test", "", "")
	replies := make(chan string, 64)
	c.Subscribe("mos-test/rpc", 1, func(_ paho.Client, m paho.Message) { replies <- string(m.Payload()) }).Wait()
	for _, m := range f.Members {
		id := m.Device.DeviceID()
		c.Publish(id+"/rpc", 1, false, fmt.Sprintf(`{"src":"mos-test","dst":"%s","id":1,"method":"Sys.GetInfo"}`, id)).Wait()
	}
	seen := map[string]bool{}
	for range f.Members {
		select {
		case r := <-replies:
			var fr struct{ Result struct{ ID, MAC string } }
			json.Unmarshal([]byte(r), &fr)
			if !strings.HasPrefix(fr.Result.ID, "esp32_0000") || fr.Result.MAC != "240AC4"+fr.Result.ID[6:] {
				t.Fatalf("reply %s", r)
			}
			seen[fr.Result.ID] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d replies", len(seen))
		}
	}
	if len(seen) != 12 {
		t.Fatalf("replies from %d distinct devices", len(seen))
	}
}

// TestFleetFileDescriptors checks that an idle device holds one descriptor
// (its HTTP listener): MQTT goes through in-process pipes and the flash
// image is closed when idle.
func TestFleetFileDescriptors(t *testing.T) {
	if ProcessFDs() < 0 {
		t.Skip("no /proc/self/fd")
	}
	b := startBroker(t, mqtt.BrokerOptions{})
	before := ProcessFDs()
	f := startFleet(t, Options{Count: 40, Broker: b})
	if n := f.WaitConnected(context.Background(), 20*time.Second); n != 40 {
		t.Fatalf("%d/40 connected", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		open := 0
		for _, m := range f.Members {
			open += m.Device.OpenFiles()
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d flash images still open", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if per := float64(ProcessFDs()-before) / 40; per > 1.05 {
		t.Fatalf("%.2f descriptors per idle device, want 1", per)
	}
}

func TestFleetManifestAndConsole(t *testing.T) {
	b := startBroker(t, mqtt.BrokerOptions{})
	cw := &testkit.SyncBuffer{}
	dir := t.TempDir()
	f := startFleet(t, Options{Count: 3, First: 41, Broker: b, StateDir: dir, Console: cw})
	path := filepath.Join(dir, "fleet.json")
	if err := f.WriteManifest(path, "2/5"); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m.First != 41 || len(m.Devices) != 3 || m.Shard != "2/5" || m.Broker != b.Addr() {
		t.Fatalf("manifest %+v", m)
	}
	d := m.Devices[2]
	if d.Number != 43 || d.ID != "esp32_000043" || d.StateDir != filepath.Join(dir, "dev-0043") ||
		!regexp.MustCompile(`^ws://127\.0\.0\.1:\d+/rpc$`).MatchString(d.WS) || d.MQTT != "mqtt://"+b.Addr()+"/esp32_000043" || d.MAC != "240AC4000043" {
		t.Fatalf("manifest device %+v", d)
	}
	if !strings.Contains(cw.String(), "[esp32_000042] ") {
		t.Fatalf("console lines not prefixed with the id:\n%.500s", cw.String())
	}
}

func TestWrongCredentialsShare(t *testing.T) {
	b := startBroker(t, mqtt.BrokerOptions{User: "fleet", Pass: "s3cret"})
	f := startFleet(t, Options{Count: 10, Broker: b, MQTTUser: "fleet", MQTTPass: "s3cret", WrongCredentials: 0.3})
	wrong := 0
	for _, m := range f.Members {
		if m.WrongCredentials {
			wrong++
		}
	}
	if wrong != 3 {
		t.Fatalf("%d of 10 with wrong credentials, want 3", wrong)
	}
	if n := f.WaitConnected(context.Background(), 20*time.Second); n != 7 {
		t.Fatalf("%d connected, want 7", n)
	}
	time.Sleep(300 * time.Millisecond) // refused devices stay refused
	for _, m := range f.Members {
		if m.Device.MQTTConnected() == m.WrongCredentials {
			t.Fatalf("device %d: connected %v with wrong credentials %v", m.Number, m.Device.MQTTConnected(), m.WrongCredentials)
		}
	}
}

func TestTelemetryReachesBackEnd(t *testing.T) {
	b := startBroker(t, mqtt.BrokerOptions{})
	f := startFleet(t, Options{Count: 4, Broker: b})
	f.WaitConnected(context.Background(), 20*time.Second)
	plan, err := ParseTelemetry(Telemetry{Topic: "t/{{.ID}}", Payload: `{"n":{{.N}},"v":{{randi 5 5}}}`, Interval: 100 * time.Millisecond, QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := backEnd(t, b.Addr(), "backend", "", "")
	got := make(chan [2]string, 256)
	c.Subscribe("t/+", 1, func(_ paho.Client, m paho.Message) { got <- [2]string{m.Topic(), string(m.Payload())} }).Wait()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.RunTelemetry(ctx, plan); close(done) }()
	defer func() { cancel(); <-done }()
	second := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for len(second) < 4 {
		select {
		case m := <-got:
			if !regexp.MustCompile(`^t/esp32_00000[1-4]$`).MatchString(m[0]) || !regexp.MustCompile(`^\{"n":\d+,"v":5\}$`).MatchString(m[1]) {
				t.Fatalf("message %q %q", m[0], m[1])
			}
			if strings.Contains(m[1], `"n":2,`) {
				second[m[0]] = true
			}
		case <-deadline:
			t.Fatalf("second message from %d of 4 devices", len(second))
		}
	}
}

func TestChurnAndProbe(t *testing.T) {
	b := startBroker(t, mqtt.BrokerOptions{})
	f := startFleet(t, Options{Count: 5, Broker: b})
	f.WaitConnected(context.Background(), 20*time.Second)
	p, err := f.StartProber("probe")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { f.RunChurn(ctx, Churn{PowerCycleRate: 5, DisconnectRate: 10}); done <- struct{}{} }()
	go func() { p.Run(ctx, 20, 5*time.Second); done <- struct{}{} }()
	deadline := time.Now().Add(20 * time.Second)
	c := f.Counters()
	for c.PowerCycles.Load() < 2 || c.Disconnects.Load() < 3 || c.RPCOK.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("power cycles %d, disconnects %d, RPC ok %d", c.PowerCycles.Load(), c.Disconnects.Load(), c.RPCOK.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	<-done
	if n := f.WaitConnected(context.Background(), 30*time.Second); n != 5 {
		t.Fatalf("%d/5 reconnected after churn", n)
	}
	s := f.NewStats().Take()
	if s.RPCP50 <= 0 || s.RPCP99 < s.RPCP50 {
		t.Fatalf("latencies p50 %v p99 %v", s.RPCP50, s.RPCP99)
	}
}

func TestPrometheusExposition(t *testing.T) {
	var buf bytes.Buffer
	s := Snapshot{Devices: 3, Connected: 2, Telemetry: 10, BrokerIn: 12, RPCOK: 4, RPCP50: 2 * time.Millisecond, RPCP99: 9 * time.Millisecond, RSS: 1 << 20, FDs: 7}
	if err := s.WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	sample := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"\})? [-+0-9.eE]+$`)
	types := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		if f, ok := strings.CutPrefix(l, "# TYPE "); ok {
			name, typ, _ := strings.Cut(f, " ")
			types[name] = typ
			continue
		}
		if strings.HasPrefix(l, "# HELP ") {
			continue
		}
		if !sample.MatchString(l) {
			t.Fatalf("not a sample line: %q", l)
		}
	}
	for _, want := range []string{"mosemu_fleet_mqtt_connected 2\n", "mosemu_fleet_rpc_latency_seconds{quantile=\"0.99\"} 0.009\n", "mosemu_fleet_broker_messages_received_total 12\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("missing %q in\n%s", want, buf.String())
		}
	}
	if types["mosemu_fleet_rpc_latency_seconds"] != "summary" || types["mosemu_fleet_telemetry_messages_total"] != "counter" {
		t.Fatalf("types %v", types)
	}
}

func TestShardsCoverTheFleet(t *testing.T) {
	for _, tc := range []struct{ total, n int }{{10, 1}, {10, 3}, {10000, 4}, {7, 7}} {
		next := 1
		for i := range tc.n {
			s, err := ParseShard(fmt.Sprintf("%d/%d", i, tc.n), tc.total)
			if err != nil {
				t.Fatal(err)
			}
			if s.First != next || s.Count < tc.total/tc.n {
				t.Fatalf("%d devices, shard %d/%d: %+v, want first %d", tc.total, i, tc.n, s, next)
			}
			next += s.Count
		}
		if next != tc.total+1 {
			t.Fatalf("%d devices in %d shards cover %d", tc.total, tc.n, next-1)
		}
	}
	for _, bad := range []string{"", "1", "2/2", "-1/2", "a/b", "0/0", "0/11"} {
		if _, err := ParseShard(bad, 10); err == nil {
			t.Errorf("shard %q accepted", bad)
		}
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{Count: 0}, {Count: 1, Rate: -1}, {Count: 2, First: MaxDevices}, {Count: 2, WrongCredentials: 1.5, MQTTUser: "u"},
		{Count: 2, WrongCredentials: 0.5}, {Count: 1, TLSLatencyShare: -0.1},
		{Count: 3, HTTP: "127.0.0.1:65534"}, {Count: 1, HTTP: "nohostport"},
	} {
		if err := o.Check(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if err := (Churn{DisconnectRate: -2}).Check(); err == nil {
		t.Error("negative disconnect rate accepted")
	}
	for _, tm := range []Telemetry{{Topic: "a/#", Payload: "x", Interval: time.Second}, {Topic: "{{.Nope}}", Payload: "x", Interval: time.Second},
		{Topic: "a", Payload: "{{", Interval: time.Second}, {Topic: "a", Payload: "x"}, {Topic: "a", Payload: "x", Interval: time.Second, QoS: 3}} {
		if _, err := ParseTelemetry(tm); err == nil {
			t.Errorf("telemetry %+v accepted", tm)
		}
	}
}

// BenchmarkIdleDeviceMemory boots a fleet connected to an embedded broker
// and reports the heap cost of one idle device (bytes/device) and the boot
// time per device.
func BenchmarkIdleDeviceMemory(b *testing.B) {
	n := 200
	if testing.Short() {
		n = 50
	}
	for b.Loop() {
		br, _ := mqtt.StartBroker("127.0.0.1:0", nil)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		f, err := Start(context.Background(), Options{Count: n, StateDir: b.TempDir(), Broker: br})
		if err != nil {
			b.Fatal(err)
		}
		boot := time.Since(start)
		f.WaitConnected(context.Background(), 60*time.Second)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(n), "heap-bytes/device")
		b.ReportMetric(float64(boot.Microseconds())/float64(n), "boot-µs/device")
		b.ReportMetric(float64(runtime.NumGoroutine())/float64(n), "goroutines/device")
		f.Close()
		br.Close()
	}
}

// TestFleetRestartKeepsIdentity: a fleet started again on its state has the
// same devices (ids, MACs), and what a device stored survives.
func TestFleetRestartKeepsIdentity(t *testing.T) {
	b := startBroker(t, mqtt.BrokerOptions{})
	dir := t.TempDir()
	f, err := Start(context.Background(), Options{Count: 3, Broker: b, StateDir: dir})
	if err != nil || len(f.Failed) != 0 {
		t.Fatal(err, f.Failed)
	}
	before := f.Manifest("")
	if err := f.Members[1].Device.Flash().Erase(0x3F0000, 0x1000); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Members[1].Device.Flash().WriteAt([]byte("kept"), 0x3F0000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g := startFleet(t, Options{Count: 3, Broker: b, StateDir: dir})
	after := g.Manifest("")
	for i := range before.Devices {
		x, y := before.Devices[i], after.Devices[i]
		if x.ID != y.ID || x.MAC != y.MAC || x.StateDir != y.StateDir {
			t.Fatalf("device %d: %+v, then %+v", i+1, x, y)
		}
	}
	got := make([]byte, 4)
	g.Members[1].Device.Flash().ReadAt(got, 0x3F0000)
	if string(got) != "kept" {
		t.Fatalf("flash after restart: %q", got)
	}
}

func TestFleetESP8266Identity(t *testing.T) {
	b := startBroker(t, mqtt.BrokerOptions{})
	dir := t.TempDir()
	f := startFleet(t, Options{Count: 2, First: 1234, Arch: "esp8266", Broker: b, StateDir: dir})
	d := f.Members[1].Device
	if d.MAC() != "5CCF7F001235" || d.DeviceID() != "esp8266_001235" {
		t.Fatalf("device 1235: MAC %s, id %s", d.MAC(), d.DeviceID())
	}
	f.Close()
	g := startFleet(t, Options{Count: 2, First: 1234, Arch: "esp8266", Broker: b, StateDir: dir})
	if mac := g.Members[1].Device.MAC(); mac != "5CCF7F001235" {
		t.Fatalf("after restart: MAC %s", mac)
	}
}
