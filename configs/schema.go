// Package configs is Mongoose OS sys_config: the schema with its defaults,
// the conf1..conf9 layering on the device filesystem, conf_acl, device.id
// templating, saving the difference to conf9.json, and the Config.* RPC
// service.
package configs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Kind is the type of a config value.
type Kind int

// Value kinds.
const (
	Object Kind = iota
	String
	Int
	Bool
	Double
)

// Node is one key of the schema.
type Node struct {
	Key      string // last path element
	Path     string // dotted path from the root
	Kind     Kind
	Default  any // string, int64, bool or float64; nil for objects
	Children []*Node
	// Min and Max bound Int and Double values when Bounded: what the
	// firmware's C types and the code using them allow (a 16-bit MQTT
	// keep-alive, non-negative timers, frame sizes a device can hold).
	Min, Max float64
	Bounded  bool
}

// clamp returns v brought into the node's range (v itself when in range).
func (n *Node) clamp(v any) any {
	if !n.Bounded {
		return v
	}
	switch x := v.(type) {
	case int64:
		if float64(x) < n.Min {
			return int64(n.Min)
		}
		if float64(x) > n.Max {
			return int64(n.Max)
		}
	case float64:
		if x < n.Min || x != x { // NaN
			return n.Min
		}
		if x > n.Max {
			return n.Max
		}
	}
	return v
}

// bound renders a range end in the node's type.
func (n *Node) bound(f float64) any {
	if n.Kind == Int {
		return int64(f)
	}
	return f
}

// limits are the ranges of the bounded keys ("*" stands for mqtt and mqtt1).
var limits = map[string][2]float64{
	"debug.level":                                {-1, 4},
	"debug.udp_log_level":                        {-1, 4},
	"debug.event_level":                          {-1, 4},
	"sys.wdt_timeout":                            {0, 3600},
	"sys.atca.i2c_addr":                          {0, 255}, // 7-bit, or shifted as cryptoauthlib takes it
	"http.auth_algo":                             {0, 1},
	"rpc.max_frame_size":                         {64, MaxFrameSize},
	"rpc.max_queue_length":                       {0, 1000},
	"rpc.max_non_persistent_channels":            {0, 1000},
	"rpc.default_out_channel_idle_close_timeout": {0, 86400},
	"rpc.auth_algo":                              {0, 1},
	"rpc.ws.reconnect_interval_min":              {0, 86400},
	"rpc.ws.reconnect_interval_max":              {0, 86400},
	"rpc.uart.fc_type":                           {0, 2},
	"rpc.mqtt.qos":                               {0, 1},
	"*.keep_alive":                               {0, 65535},
	"*.reconnect_timeout_min":                    {0, 86400},
	"*.reconnect_timeout_max":                    {0, 86400},
	"*.max_qos":                                  {0, 2},
	"*.recv_mbuf_limit":                          {0, MaxFrameSize},
	"*.max_queue_length":                         {0, 1000},
	"wifi.sta_connect_timeout":                   {0, 86400},
}

// MaxFrameSize is the largest rpc.max_frame_size accepted: a frame must fit
// in the RAM of the board (and one of the host process per device).
const MaxFrameSize = 256 * 1024

// Schema is the immutable description of every config key, in firmware
// order. Schemas are shared by all devices of an arch.
type Schema struct {
	Root   *Node
	byPath map[string]*Node
	parsed *parseMemo
}

// parseMemo keeps the decoded form of large config files loaded against a
// schema: every boot of every device of a fleet loads the same conf0.json
// (the schema's defaults), tens of kilobytes of JSON. The decoded values
// are only read.
type parseMemo struct {
	mu sync.Mutex
	m  map[string]any // text -> decoded JSON
}

// Files below memoMin bytes are decoded every time; at most memoMax are kept.
const (
	memoMin = 4 << 10
	memoMax = 4
)

// decode parses one JSON value (json.Number for numbers) filling text,
// from the memo when text was decoded before.
func (s *Schema) decode(text []byte) (any, error) {
	memo := s.parsed
	if memo != nil && len(text) >= memoMin {
		memo.mu.Lock()
		v, ok := memo.m[string(text)]
		memo.mu.Unlock()
		if ok {
			return v, nil
		}
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, &ParseError{"Invalid JSON"}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &ParseError{"Invalid JSON"}
	}
	if memo != nil && len(text) >= memoMin {
		memo.mu.Lock()
		if len(memo.m) >= memoMax {
			for k := range memo.m { // forget one
				delete(memo.m, k)
				break
			}
		}
		memo.m[string(text)] = v
		memo.mu.Unlock()
	}
	return v, nil
}

// Lookup returns the node at a dotted path ("" is the root).
func (s *Schema) Lookup(path string) (*Node, bool) {
	if path == "" {
		return s.Root, true
	}
	n, ok := s.byPath[path]
	return n, ok
}

func obj(key string, children ...*Node) *Node {
	return &Node{Key: key, Kind: Object, Children: children}
}
func str(key, def string) *Node         { return &Node{Key: key, Kind: String, Default: def} }
func num(key string, def int64) *Node   { return &Node{Key: key, Kind: Int, Default: def} }
func flag(key string, def bool) *Node   { return &Node{Key: key, Kind: Bool, Default: def} }
func dbl(key string, def float64) *Node { return &Node{Key: key, Kind: Double, Default: def} }

func staConfig(key string) *Node {
	return obj(key, flag("enable", false), str("ssid", ""), str("pass", ""), str("bssid", ""),
		num("channel", 0), str("last_bssid", ""), num("last_channel", 0), str("user", ""),
		str("anon_identity", ""), str("cert", ""), str("key", ""), str("ca_cert", ""), str("ip", ""),
		str("netmask", ""), str("gw", ""), str("nameserver", ""), str("dhcp_hostname", ""))
}

func mqttConfig(key string, enable bool, server string) *Node {
	return obj(key, flag("enable", enable), str("server", server), str("client_id", ""),
		str("user", ""), str("pass", ""), dbl("reconnect_timeout_min", 2), dbl("reconnect_timeout_max", 60),
		str("ssl_cert", ""), str("ssl_key", ""), str("ssl_ca_cert", ""), str("ssl_cipher_suites", ""),
		str("ssl_psk_identity", ""), str("ssl_psk_key", ""), flag("clean_session", true),
		num("keep_alive", 60), str("will_topic", ""), str("will_message", ""), flag("will_retain", false),
		num("max_qos", 2), num("recv_mbuf_limit", 3072), flag("require_time", false),
		flag("cloud_events", true), num("max_queue_length", 5), flag("ws_enable", false),
		str("ws_path", "/mqtt"), flag("debug_use_log_level", false))
}

// i2cConfig is the i2c lib's section (mongoose-os-libs/i2c mos.yml and its
// per-platform mos_<arch>.yml): the ESP8266 bit-bangs the bus on any GPIO,
// SDA 12 / SCL 14 by default (NodeMCU D6/D5); the ESP32 uses hardware unit
// unit_no on SDA 32 / SCL 33.
func i2cConfig(arch string) *Node {
	n := obj("i2c", flag("enable", false), num("freq", 100000), flag("debug", false))
	if arch == "esp8266" {
		n.Children = append(n.Children, num("sda_gpio", 12), num("scl_gpio", 14))
	} else {
		n.Children = append(n.Children, num("unit_no", 0), num("sda_gpio", 32), num("scl_gpio", 33))
	}
	return n
}

func buildSchema(arch string) *Schema {
	root := obj("",
		obj("device", str("id", arch+"_??????"), str("license", ""), str("mac", ""),
			str("public_key", ""), str("sn", "")),
		obj("debug", str("udp_log_addr", ""), num("udp_log_level", 3), num("mbedtls_level", 0),
			num("level", 2), str("file_level", ""), num("event_level", 2), num("stdout_uart", 0),
			num("stderr_uart", 0), num("factory_reset_gpio", -1), str("mg_mgr_hexdump_file", ""),
			str("stdout_topic", ""), str("stderr_topic", "")),
		obj("sys", str("tz_spec", ""), num("wdt_timeout", 30), str("pref_ota_lib", ""),
			obj("atca", flag("enable", false), num("i2c_bus", 0), num("i2c_addr", 0x60),
				num("ecdh_slots_mask", 0x0c))),
		i2cConfig(arch),
		str("conf_acl", "*"),
		obj("http", flag("enable", true), str("listen_addr", "80"), str("document_root", "/"),
			str("index_files", ""), str("ssl_cert", ""), str("ssl_key", ""), str("ssl_ca_cert", ""),
			str("upload_acl", "*"), str("hidden_files", ""), str("auth_domain", ""), str("auth_file", ""),
			num("auth_algo", 0), str("extra_headers", "")),
		obj("rpc", flag("enable", true), flag("http_enable", true), flag("service_sys_enable", true),
			num("max_frame_size", 4096), num("max_queue_length", 25), num("max_non_persistent_channels", 20),
			num("default_out_channel_idle_close_timeout", 10), str("acl", ""), str("acl_file", ""),
			str("auth_domain", "RPC"), str("auth_file", ""), num("auth_algo", 0),
			obj("ws", flag("enable", true), str("server_address", ""), num("reconnect_interval_min", 1),
				num("reconnect_interval_max", 60), str("ssl_server_name", ""), str("ssl_cert", ""),
				str("ssl_key", ""), str("ssl_ca_cert", "")),
			obj("uart", num("uart_no", 0), num("baud_rate", 115200), num("fc_type", 2), str("dst", "")),
			obj("mqtt", flag("enable", true), str("pub_topic", "%.*s/rpc"), str("sub_topic", "%.*s/rpc"),
				flag("sub_wc", true), num("qos", 1))),
		mqttConfig("mqtt", false, "iot.eclipse.org:1883"),
		mqttConfig("mqtt1", false, ""),
		obj("wifi",
			obj("ap", flag("enable", true), str("ssid", "Mongoose_??????"), str("pass", "Mongoose"),
				flag("hidden", false), num("channel", 6), num("max_connections", 10), str("ip", "192.168.4.1"),
				str("netmask", "255.255.255.0"), str("gw", "192.168.4.1"), str("dhcp_start", "192.168.4.2"),
				str("dhcp_end", "192.168.4.100"), num("trigger_on_gpio", -1), num("disable_after", 0),
				str("hostname", "")),
			staConfig("sta"), staConfig("sta1"), staConfig("sta2"),
			num("sta_rssi_thr", -95), num("sta_connect_timeout", 15), num("sta_roam_rssi_thr", -80),
			num("sta_roam_interval", 0)),
		obj("update", num("timeout", 600), num("commit_timeout", 0),
			str("key0", ""), str("key1", ""), str("key2", ""), str("key3", ""), str("key4", ""),
			str("key5", ""), str("key6", ""), str("key7", ""), num("sig_req_mask", -1),
			str("url", ""), num("interval", 0), str("extra_http_headers", ""), str("ssl_ca_file", "ca.pem"),
			str("ssl_client_cert_file", ""), str("ssl_server_name", "")),
	)
	s := &Schema{Root: root, byPath: map[string]*Node{}, parsed: &parseMemo{m: map[string]any{}}}
	var walk func(n *Node, prefix string)
	walk = func(n *Node, prefix string) {
		for _, c := range n.Children {
			c.Path = strings.TrimPrefix(prefix+"."+c.Key, ".")
			s.byPath[c.Path] = c
			walk(c, c.Path)
		}
	}
	walk(root, "")
	for path, r := range limits {
		paths := []string{path}
		if rest, ok := strings.CutPrefix(path, "*."); ok {
			paths = []string{"mqtt." + rest, "mqtt1." + rest}
		}
		for _, p := range paths {
			n, ok := s.byPath[p]
			if !ok || (n.Kind != Int && n.Kind != Double) {
				panic("configs: limit on unknown or non-numeric key " + p)
			}
			n.Min, n.Max, n.Bounded = r[0], r[1], true
		}
	}
	return s
}

// Schemas builds each arch's schema once and hands out the shared,
// read-only copy.
type Schemas struct {
	mu sync.Mutex
	m  map[string]*Schema
}

// For returns the schema of arch ("esp32", "esp8266").
func (ss *Schemas) For(arch string) *Schema {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[string]*Schema{}
	}
	if s, ok := ss.m[arch]; ok {
		return s
	}
	s := buildSchema(arch)
	ss.m[arch] = s
	return s
}

// NewSchema returns a fresh schema for arch.
func NewSchema(arch string) *Schema { return buildSchema(arch) }

func (k Kind) String() string {
	return [...]string{"object", "string", "int", "bool", "double"}[k]
}

var _ = fmt.Sprint
