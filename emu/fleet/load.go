package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Counters are the fleet's running totals, safe for concurrent use.
type Counters struct {
	TelemetrySent    atomic.Int64 // telemetry messages handed to the MQTT client
	TelemetryErrors  atomic.Int64 // publishes that failed (device offline, timeout)
	TelemetrySkipped atomic.Int64 // publishes skipped because the publishers were behind
	PowerCycles      atomic.Int64
	Disconnects      atomic.Int64 // broker-side / network disconnects caused
	Storms           atomic.Int64
	RPCSent          atomic.Int64 // probe calls sent
	RPCOK            atomic.Int64 // probe replies received
	RPCTimeouts      atomic.Int64
	latency          latencies
}

// Counters returns the fleet's running totals.
func (f *Fleet) Counters() *Counters { return &f.counters }

// latencies keeps the RPC round trips of the current stats window.
type latencies struct {
	mu     sync.Mutex
	window []time.Duration
	all    []time.Duration // for the summary, at most 1<<20
	sum    time.Duration   // all time
	count  int64
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.window) < 1<<16 {
		l.window = append(l.window, d)
	}
	if len(l.all) < 1<<20 {
		l.all = append(l.all, d)
	}
	l.sum += d
	l.count++
}

// AllLatencies returns every recorded probe round trip, sorted.
func (c *Counters) AllLatencies() []time.Duration {
	c.latency.mu.Lock()
	all := append([]time.Duration(nil), c.latency.all...)
	c.latency.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return all
}

// take returns the window's samples, sorted, and starts a new window.
func (l *latencies) take() []time.Duration {
	l.mu.Lock()
	w := l.window
	l.window = nil
	l.mu.Unlock()
	sort.Slice(w, func(i, j int) bool { return w[i] < w[j] })
	return w
}

// peek returns a sorted copy of the window's samples.
func (l *latencies) peek() []time.Duration {
	l.mu.Lock()
	w := append([]time.Duration(nil), l.window...)
	l.mu.Unlock()
	sort.Slice(w, func(i, j int) bool { return w[i] < w[j] })
	return w
}

func (l *latencies) total() (time.Duration, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sum, l.count
}

// Quantile returns the q-quantile (0..1) of sorted samples, 0 without any.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Telemetry is what every device publishes, and how often.
type Telemetry struct {
	// Topic and Payload are text/template templates over TelemetryData,
	// with the functions rand (float in [0,1)), randf A B (float in [A,B)),
	// randi A B (integer in [A,B]) and now (Unix seconds), e.g.
	// `{"n":{{.N}},"temp":{{randf 20 30 | printf "%.1f"}}}`.
	Topic, Payload string
	// Interval between two messages of one device.
	Interval time.Duration
	QoS      byte
}

// TelemetryData is the data the telemetry templates see.
type TelemetryData struct {
	ID     string // device id, e.g. esp32_000001
	Number int    // device number
	N      int64  // the device's message counter, from 1
}

// ParseTelemetry compiles the templates and checks them on a sample.
func ParseTelemetry(t Telemetry) (*TelemetryPlan, error) {
	if t.Interval <= 0 {
		return nil, errors.New("fleet: telemetry interval must be positive")
	}
	if t.QoS > 2 {
		return nil, fmt.Errorf("fleet: telemetry QoS %d: must be 0, 1 or 2", t.QoS)
	}
	funcs := template.FuncMap{
		"rand":  rand.Float64,
		"randf": func(a, b float64) float64 { return a + rand.Float64()*(b-a) },
		"randi": func(a, b int) int {
			if b < a {
				a, b = b, a
			}
			return a + rand.IntN(b-a+1)
		},
		"now": func() int64 { return time.Now().Unix() },
	}
	topic, err := template.New("topic").Funcs(funcs).Option("missingkey=error").Parse(t.Topic)
	if err != nil {
		return nil, fmt.Errorf("fleet: telemetry topic: %w", err)
	}
	payload, err := template.New("payload").Funcs(funcs).Option("missingkey=error").Parse(t.Payload)
	if err != nil {
		return nil, fmt.Errorf("fleet: telemetry payload: %w", err)
	}
	p := &TelemetryPlan{Telemetry: t, topic: topic, payload: payload}
	tp, _, err := p.Render(TelemetryData{ID: "esp32_000001", Number: 1, N: 1})
	if err != nil {
		return nil, err
	}
	if tp == "" || strings.ContainsAny(tp, "+#\x00") {
		return nil, fmt.Errorf("fleet: telemetry topic %q: not a valid topic to publish to", tp)
	}
	return p, nil
}

// TelemetryPlan is a compiled Telemetry.
type TelemetryPlan struct {
	Telemetry
	topic, payload *template.Template
}

// Render expands the templates for one message.
func (p *TelemetryPlan) Render(d TelemetryData) (topic string, payload []byte, err error) {
	var tb, pb bytes.Buffer
	if err := p.topic.Execute(&tb, d); err != nil {
		return "", nil, fmt.Errorf("fleet: telemetry topic: %w", err)
	}
	if err := p.payload.Execute(&pb, d); err != nil {
		return "", nil, fmt.Errorf("fleet: telemetry payload: %w", err)
	}
	return tb.String(), pb.Bytes(), nil
}

// RunTelemetry makes every device publish at the plan's interval, spread
// evenly over the interval, until ctx ends. A few publisher goroutines
// serve the whole fleet; when they fall behind, messages are skipped and
// counted rather than queued.
func (f *Fleet) RunTelemetry(ctx context.Context, p *TelemetryPlan) {
	if len(f.Members) == 0 {
		return
	}
	work := make(chan *Member, 1024)
	var wg sync.WaitGroup
	counters := make([]int64, len(f.Members))
	index := map[*Member]int{}
	for i, m := range f.Members {
		index[m] = i
	}
	busy := make([]atomic.Bool, len(f.Members)) // queued or being published
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				i := index[m]
				counters[i]++ // one publisher per message; a member is never queued twice at once (see below)
				topic, payload, err := p.Render(TelemetryData{ID: DeviceID(f.Opts.Arch, m.Number), Number: m.Number, N: counters[i]})
				if err == nil {
					err = m.Device.MQTTPublish(topic, p.QoS, payload)
				}
				if err != nil {
					f.counters.TelemetryErrors.Add(1)
				} else {
					f.counters.TelemetrySent.Add(1)
				}
				busy[i].Store(false)
			}
		}()
	}
	step := p.Interval / time.Duration(len(f.Members))
	next := time.Now()
	defer func() { close(work); wg.Wait() }()
	for {
		for i, m := range f.Members {
			next = next.Add(step)
			if d := time.Until(next); d > time.Millisecond {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			} else if ctx.Err() != nil {
				return
			}
			if !busy[i].CompareAndSwap(false, true) {
				f.counters.TelemetrySkipped.Add(1)
				continue
			}
			select {
			case work <- m:
			default:
				busy[i].Store(false)
				f.counters.TelemetrySkipped.Add(1)
			}
		}
	}
}

// Churn is connection churn across the fleet.
type Churn struct {
	PowerCycleRate float64       // power cycles per second, fleet-wide
	DisconnectRate float64       // broker-side disconnects per second, fleet-wide
	StormEvery     time.Duration // a reconnect storm this often (0 = none)
	StormShare     float64       // share of the devices (0..1) dropped at once by a storm
}

// Check validates the churn settings.
func (c Churn) Check() error {
	switch {
	case c.PowerCycleRate < 0 || math.IsNaN(c.PowerCycleRate) || math.IsInf(c.PowerCycleRate, 0):
		return fmt.Errorf("fleet: power-cycle rate %v: must be a finite number >= 0", c.PowerCycleRate)
	case c.DisconnectRate < 0 || math.IsNaN(c.DisconnectRate) || math.IsInf(c.DisconnectRate, 0):
		return fmt.Errorf("fleet: disconnect rate %v: must be a finite number >= 0", c.DisconnectRate)
	case c.StormEvery < 0:
		return errors.New("fleet: storm interval must be >= 0")
	case !isFraction(c.StormShare):
		return fmt.Errorf("fleet: storm share %v: must be between 0 and 1", c.StormShare)
	case c.StormEvery > 0 && c.StormShare == 0:
		return errors.New("fleet: a reconnect storm needs a share of devices to drop")
	}
	return nil
}

// disconnect drops one device's MQTT session: from the broker side when the
// broker is embedded, by closing the device's connection otherwise.
func (f *Fleet) disconnect(m *Member) bool {
	if f.Opts.BrokerAddr == "" && f.Opts.Broker != nil {
		if f.Opts.Broker.Disconnect(m.Device.DeviceID()) {
			return true
		}
	}
	return m.Device.DropMQTT()
}

// RunChurn power-cycles and disconnects random devices at the given rates
// until ctx ends.
func (f *Fleet) RunChurn(ctx context.Context, c Churn) {
	if len(f.Members) == 0 {
		return
	}
	pick := func() *Member { return f.Members[rand.IntN(len(f.Members))] }
	var wg sync.WaitGroup
	every := func(rate float64, do func()) {
		if rate <= 0 {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					do()
				}
			}
		}()
	}
	every(c.PowerCycleRate, func() {
		m := pick()
		go func() { // a boot takes a while; the ticker keeps its rate
			if m.Device.Reboot() == nil {
				f.counters.PowerCycles.Add(1)
			}
		}()
	})
	every(c.DisconnectRate, func() {
		if f.disconnect(pick()) {
			f.counters.Disconnects.Add(1)
		}
	})
	if c.StormEvery > 0 {
		every(float64(time.Second)/float64(c.StormEvery), func() {
			f.counters.Storms.Add(1)
			for _, m := range f.Members {
				if rand.Float64() < c.StormShare && f.disconnect(m) {
					f.counters.Disconnects.Add(1)
				}
			}
		})
	}
	wg.Wait()
}

// Prober calls Sys.GetInfo on random devices over MQTT, as a back end
// would, and records the round trips.
type Prober struct {
	f       *Fleet
	c       paho.Client
	id      string
	mu      sync.Mutex
	pending map[int64]time.Time
	next    int64
}

// StartProber connects a back-end client (named clientID) to the fleet's
// broker.
func (f *Fleet) StartProber(clientID string) (*Prober, error) {
	p := &Prober{f: f, id: clientID, pending: map[int64]time.Time{}}
	o := paho.NewClientOptions().AddBroker("tcp://" + f.BrokerAddr()).SetClientID(clientID).
		SetUsername(f.Opts.MQTTUser).SetPassword(f.Opts.MQTTPass).SetAutoReconnect(true).
		SetConnectTimeout(10 * time.Second).SetOrderMatters(false)
	if f.Opts.BrokerAddr == "" && f.Opts.Broker != nil {
		o.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) { return f.Opts.Broker.Dial() })
	}
	o.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(clientID+"/rpc", 0, p.onReply)
	})
	p.c = paho.NewClient(o)
	t := p.c.Connect()
	if !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		p.c.Disconnect(0)
		return nil, fmt.Errorf("fleet: RPC prober connecting to %s: %v", f.BrokerAddr(), t.Error())
	}
	return p, nil
}

func (p *Prober) onReply(_ paho.Client, msg paho.Message) {
	var r struct {
		ID int64 `json:"id"`
	}
	if json.Unmarshal(msg.Payload(), &r) != nil {
		return
	}
	p.mu.Lock()
	sent, ok := p.pending[r.ID]
	delete(p.pending, r.ID)
	p.mu.Unlock()
	if ok {
		p.f.counters.RPCOK.Add(1)
		p.f.counters.latency.add(time.Since(sent))
	}
}

// Run sends rate calls per second to random connected devices until ctx
// ends; calls unanswered after timeout count as timeouts.
func (p *Prober) Run(ctx context.Context, rate float64, timeout time.Duration) {
	defer p.c.Disconnect(50)
	if rate <= 0 || len(p.f.Members) == 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.expire(timeout)
		m := p.f.Members[rand.IntN(len(p.f.Members))]
		if !m.Device.MQTTConnected() {
			continue
		}
		id := m.Device.DeviceID()
		p.mu.Lock()
		p.next++
		n := p.next
		p.pending[n] = time.Now()
		p.mu.Unlock()
		frame := fmt.Sprintf(`{"id":%d,"src":%q,"dst":%q,"method":"Sys.GetInfo"}`, n, p.id, id)
		p.c.Publish(id+"/rpc", 0, false, frame)
		p.f.counters.RPCSent.Add(1)
	}
}

func (p *Prober) expire(timeout time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, sent := range p.pending {
		if time.Since(sent) > timeout {
			delete(p.pending, id)
			p.f.counters.RPCTimeouts.Add(1)
		}
	}
}
