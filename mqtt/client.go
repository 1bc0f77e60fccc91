// Package mqtt is the device as an MQTT client (the mqtt library of
// Mongoose OS): connection from mqtt.* config, RPC over MQTT
// (<device.id>/rpc), and an embedded broker for a self-contained setup.
package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mosemu/mosemu/rpc"
)

// Config is the device's mqtt.* and rpc.mqtt.* settings.
type Config struct {
	Server       string // host[:port]; port 1883, or 8883 with TLS
	ClientID     string // "" = device id
	User, Pass   string
	KeepAlive    time.Duration
	CleanSession bool
	WillTopic    string
	WillMessage  string
	WillRetain   bool
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// TLS, when set, runs the device's TLS client handshake over the TCP
	// connection to Server and returns the protected connection; nil is
	// plain TCP.
	TLS func(net.Conn) (net.Conn, error)
	// Dial, when set, opens the connection instead of a TCP (or TLS)
	// connection to Server: the in-process pipe to an embedded broker.
	Dial func() (net.Conn, error)

	DeviceID   string
	RPC        bool // rpc.mqtt.enable
	RPCQoS     byte // rpc.mqtt.qos
	RPCHandler rpc.FrameHandler
	// MaxQueue bounds the RPC requests handled at once
	// (rpc.max_queue_length); more are dropped. <= 0 means 25.
	MaxQueue int

	// Supervise, when set, runs every callback of the connection (message
	// arrivals, connect and disconnect events) under the device's
	// supervisor, so that a panic is the device's crash, not the process's.
	Supervise func(where string, f func())
}

// Bounds the connection enforces whatever the config says: MQTT's 16-bit
// keep-alive, and a floor on the reconnect back-off so that a zero or
// negative mqtt.reconnect_timeout_min cannot spin a host core.
const (
	MaxKeepAlive    = 65535 * time.Second
	MinReconnect    = 100 * time.Millisecond
	maxTopicLen     = 65535
	replyTopicExtra = len("/rpc")
)

// clamp brings the timers of cfg into the range the protocol and the
// client library accept.
func (cfg *Config) clamp() {
	cfg.KeepAlive = min(max(cfg.KeepAlive, 0), MaxKeepAlive)
	cfg.ReconnectMin = max(cfg.ReconnectMin, MinReconnect)
	cfg.ReconnectMax = max(cfg.ReconnectMax, cfg.ReconnectMin)
}

// ValidSrc reports whether src can be the prefix of a reply topic: MQTT
// topic names are non-empty UTF-8 without wildcards ('+', '#'), NUL or
// other control characters, at most 65535 bytes. Publishing to anything
// else makes the broker drop the connection, and the client would resend
// the stored QoS 1 reply on every reconnect.
func ValidSrc(src string) bool {
	if src == "" || len(src)+replyTopicExtra > maxTopicLen || !utf8.ValidString(src) {
		return false
	}
	for _, r := range src {
		if r == '+' || r == '#' || r < 0x20 || (r >= 0x7F && r <= 0x9F) {
			return false
		}
	}
	return true
}

func (m *Client) guard(where string, f func()) {
	if m.cfg.Supervise != nil {
		m.cfg.Supervise(where, f)
		return
	}
	f()
}

// Client is a running device MQTT connection.
type Client struct {
	cfg  Config
	log  *slog.Logger
	c    paho.Client
	mu   sync.Mutex
	conn bool
	nc   net.Conn      // the current network connection, for Drop
	busy chan struct{} // one token per request being handled
}

// ServerAddr applies the firmware's default port rule.
func ServerAddr(server string, tlsOn bool) string {
	if _, _, err := net.SplitHostPort(server); err == nil {
		return server
	}
	if tlsOn {
		return net.JoinHostPort(server, "8883")
	}
	return net.JoinHostPort(server, "1883")
}

// Start connects in the background (and keeps reconnecting with back-off).
func Start(cfg Config, log *slog.Logger) *Client {
	cfg.clamp()
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 25
	}
	m := &Client{cfg: cfg, log: log, busy: make(chan struct{}, cfg.MaxQueue)}
	addr := ServerAddr(cfg.Server, cfg.TLS != nil)
	scheme := "tcp://"
	if cfg.TLS != nil {
		scheme = "ssl://"
	}
	id := cfg.ClientID
	if id == "" {
		id = cfg.DeviceID
	}
	o := paho.NewClientOptions().AddBroker(scheme + addr).SetClientID(id).
		SetUsername(cfg.User).SetPassword(cfg.Pass).SetKeepAlive(cfg.KeepAlive).
		SetCleanSession(cfg.CleanSession).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(cfg.ReconnectMin).SetMaxReconnectInterval(cfg.ReconnectMax).
		SetConnectTimeout(10 * time.Second).SetOrderMatters(false)
	o.SetCustomOpenConnectionFn(m.open)
	o.SetDefaultPublishHandler(func(c paho.Client, msg paho.Message) {
		m.guard("MQTT message", func() {
			if strings.HasPrefix(msg.Topic(), cfg.DeviceID+"/rpc") {
				m.onRPC(c, msg)
			}
		})
	})
	if cfg.WillTopic != "" {
		o.SetWill(cfg.WillTopic, cfg.WillMessage, 0, cfg.WillRetain)
	}
	o.SetOnConnectHandler(func(c paho.Client) { m.guard("MQTT connect", func() { m.onConnect(c) }) })
	o.SetConnectionLostHandler(func(paho.Client, error) {
		m.guard("MQTT disconnect", func() {
			m.setConnected(false)
			log.Info("MQTT0 Disconnect", "src", "mgos_mqtt_conn.c:183")
		})
	})
	o.SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
		log.Info("MQTT0 connecting to "+addr, "src", "mgos_mqtt_conn.c:468")
	})
	log.Info("MQTT0 connecting to "+addr, "src", "mgos_mqtt_conn.c:468")
	m.c = newLiteClient(o) // one goroutine per connection, see lite.go
	m.c.Connect()
	return m
}

// onConnect subscribes to the RPC topics once the session is up.
func (m *Client) onConnect(c paho.Client) {
	cfg, log := m.cfg, m.log
	m.setConnected(true)
	log.Info("MQTT0 CONNACK 0", "src", "mgos_mqtt_conn.c:154")
	if cfg.RPC && cfg.RPCHandler != nil && !ValidSrc(cfg.DeviceID) {
		// A device.id with wildcards would make the subscription invalid and
		// the broker would drop the connection at every attempt.
		log.Error(fmt.Sprintf("MQTT0 device.id %q is not a valid topic: RPC over MQTT is off", cfg.DeviceID), "src", "mgos_rpc_channel_mqtt.c:200")
		return
	}
	if cfg.RPC && cfg.RPCHandler != nil {
		// One delivery path for both filters: "<id>/rpc/#" also matches
		// "<id>/rpc", and per-filter callbacks would run a frame twice.
		filters := map[string]byte{cfg.DeviceID + "/rpc": cfg.RPCQoS, cfg.DeviceID + "/rpc/#": cfg.RPCQoS}
		c.SubscribeMultiple(filters, nil)
		for _, t := range []string{cfg.DeviceID + "/rpc", cfg.DeviceID + "/rpc/#"} {
			log.Info(fmt.Sprintf("MQTT0 sub %s @ %d", t, cfg.RPCQoS), "src", "mgos_mqtt_conn.c:362")
		}
	}
}

func (m *Client) setConnected(v bool) {
	m.mu.Lock()
	m.conn = v
	m.mu.Unlock()
}

// Connected reports whether the session is up.
func (m *Client) Connected() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conn
}

// onRPC handles a frame on <id>/rpc or <id>/rpc/<Method>.
func (m *Client) onRPC(c paho.Client, msg paho.Message) {
	frame := msg.Payload()
	prefix := m.cfg.DeviceID + "/rpc/"
	if method, ok := strings.CutPrefix(msg.Topic(), prefix); ok && method != "" {
		var obj map[string]json.RawMessage
		if json.Unmarshal(frame, &obj) != nil || obj == nil {
			obj = map[string]json.RawMessage{}
		}
		obj["method"], _ = json.Marshal(method)
		frame, _ = json.Marshal(obj)
	}
	// The dispatcher's own parser, so that the src checked here is the
	// one the reply goes to (encoding/json's case-insensitive keys would
	// read "SRC" where the dispatcher reads "src").
	if hdr, err := rpc.ParseFrame(frame); err == nil && hdr.Method != "" && len(hdr.ID) > 0 {
		if hdr.Src == "" {
			m.log.Error("Drop frame without src", "src", "mgos_rpc_channel_mqtt.c:79")
			return
		}
		if !ValidSrc(hdr.Src) {
			m.log.Error(fmt.Sprintf("Drop frame: src %q is not a valid topic", hdr.Src), "src", "mgos_rpc_channel_mqtt.c:79", "finding", "bad request")
			return
		}
	}
	select {
	case m.busy <- struct{}{}:
	default:
		m.log.Error("MQTT RPC queue full, dropping frame", "src", "mg_rpc.c:560")
		return
	}
	go m.guard("MQTT RPC", func() {
		defer func() { <-m.busy }()
		reply, err := m.cfg.RPCHandler.HandleFrame(context.Background(), rpc.ChannelInfo{Type: rpc.ChanMQTT, Persistent: true}, frame)
		if err != nil || reply == nil {
			return
		}
		var r struct {
			Dst string `json:"dst"`
		}
		json.Unmarshal(reply, &r)
		if r.Dst == "" {
			return
		}
		if !ValidSrc(r.Dst) {
			return
		}
		c.Publish(r.Dst+"/rpc", m.cfg.RPCQoS, false, reply)
	})
}

// Publish sends a message.
func (m *Client) Publish(topic string, qos byte, retain bool, payload []byte) error {
	t := m.c.Publish(topic, qos, retain, payload)
	t.WaitTimeout(5 * time.Second)
	return t.Error()
}

// open opens the network connection: Config.Dial, or TCP to the broker with
// TLS on top when configured. It remembers the connection for Drop.
func (m *Client) open(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	var nc net.Conn
	var err error
	switch {
	case m.cfg.Dial != nil:
		nc, err = m.cfg.Dial()
	case m.cfg.TLS != nil:
		var raw net.Conn
		if raw, err = net.DialTimeout("tcp", u.Host, o.ConnectTimeout); err == nil {
			raw.SetDeadline(time.Now().Add(o.ConnectTimeout))
			if nc, err = m.cfg.TLS(raw); err != nil {
				raw.Close()
			} else {
				nc.SetDeadline(time.Time{})
			}
		}
	default:
		nc, err = net.DialTimeout("tcp", u.Host, o.ConnectTimeout)
	}
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.nc = nc
	m.mu.Unlock()
	return nc, nil
}

// Drop closes the network connection under the session, as a network
// outage or a broker-side disconnect would; the client reconnects with its
// usual back-off. It reports whether there was a connection to drop.
func (m *Client) Drop() bool {
	m.mu.Lock()
	nc := m.nc
	m.nc = nil
	m.mu.Unlock()
	if nc == nil {
		return false
	}
	return nc.Close() == nil
}

// Close disconnects.
func (m *Client) Close() {
	m.c.Disconnect(100)
}
