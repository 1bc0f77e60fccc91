// Package wifi models the Wi-Fi of an emulated board as the Mongoose OS wifi
// library drives it: AP and/or STA mode from wifi.* config, a station that
// scans a list of emulated access points, connects to the strongest one
// matching wifi.sta/sta1/sta2 (SSID, auth, optional BSSID), fails on a wrong
// password or a missing network, retries, and gets an address by DHCP, with
// the firmware's log lines and the status Sys.GetInfo reports.
package wifi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mosemu/mosemu/emu/console"
)

// AP is one emulated access point.
type AP struct {
	SSID    string `json:"ssid"`
	Pass    string `json:"pass,omitempty"`    // "" = open network
	RSSI    int    `json:"rssi,omitempty"`    // dBm, default -50
	Channel int    `json:"channel,omitempty"` // default 6
	BSSID   string `json:"bssid,omitempty"`   // default derived from the SSID
	// Net is the network its DHCP server hands out, default 192.168.1.0/24
	// (gateway and DNS at .1).
	Net string `json:"net,omitempty"`
}

func (a AP) withDefaults() AP {
	if a.RSSI == 0 {
		a.RSSI = -50
	}
	if a.Channel == 0 {
		a.Channel = 6
	}
	if a.BSSID == "" {
		h := uint32(2166136261)
		for _, c := range []byte(a.SSID) {
			h = (h ^ uint32(c)) * 16777619
		}
		a.BSSID = fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(h>>24), byte(h>>16), byte(h>>8), byte(h))
	}
	a.BSSID = strings.ToLower(a.BSSID)
	if a.Net == "" {
		a.Net = "192.168.1.0/24"
	}
	return a
}

// ParseAP parses the --wifi-ap flag form "SSID[:PASS[:RSSI]]".
func ParseAP(s string) (AP, error) {
	parts := strings.SplitN(s, ":", 3)
	ap := AP{SSID: parts[0]}
	if ap.SSID == "" || len(ap.SSID) > 32 {
		return AP{}, fmt.Errorf("wifi AP %q: SSID must be 1-32 bytes", s)
	}
	if len(parts) > 1 {
		ap.Pass = parts[1]
	}
	if len(parts) > 2 {
		rssi, err := strconv.Atoi(parts[2])
		if err != nil || rssi >= 0 || rssi < -120 {
			return AP{}, fmt.Errorf("wifi AP %q: RSSI must be a negative dBm figure", s)
		}
		ap.RSSI = rssi
	}
	if ap.Pass != "" && (len(ap.Pass) < 8 || len(ap.Pass) > 63) {
		return AP{}, fmt.Errorf("wifi AP %q: a WPA2 password is 8-63 characters", s)
	}
	return ap, nil
}

// LoadAPs reads a JSON array of APs (the --wifi-aps file).
func LoadAPs(path string) ([]AP, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var aps []AP
	if err := json.Unmarshal(b, &aps); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, a := range aps {
		if a.SSID == "" {
			return nil, fmt.Errorf("%s: an AP without ssid", path)
		}
	}
	return aps, nil
}

// STAConfig is one of wifi.sta, wifi.sta1, wifi.sta2.
type STAConfig struct {
	Enable                      bool
	SSID, Pass, BSSID           string
	IP, Netmask, GW, User, Cert string
}

// Config is the wifi.* config the model reads at boot.
type Config struct {
	AP struct {
		Enable                              bool
		SSID                                string
		Channel                             int
		IP, Netmask, GW, DHCPStart, DHCPEnd string
	}
	STA            []STAConfig
	Arch           string        // "esp32" or "esp8266": names the SDK glue in log lines
	ConnectTimeout time.Duration // wifi.sta_connect_timeout
	RSSIThr        int           // wifi.sta_rssi_thr
	// Supervise, when set, runs the station's background work under the
	// device's supervisor (a panic is the device's crash, not the process's).
	Supervise func(where string, f func())
}

// Status strings as mgos_wifi_get_status_str returns them.
const (
	StatusDisconnected = "disconnected"
	StatusConnecting   = "connecting"
	StatusConnected    = "connected"
	StatusGotIP        = "got ip"
)

// Timing of the emulated radio (scan, association, DHCP).
var defaultTiming = Timing{Scan: 300 * time.Millisecond, Connect: 200 * time.Millisecond, DHCP: 100 * time.Millisecond, Retry: time.Second}

// Timing sets how long the emulated radio takes.
type Timing struct{ Scan, Connect, DHCP, Retry time.Duration }

// Station is the Wi-Fi of one boot of the firmware.
type Station struct {
	cfg    Config
	aps    []AP
	mac    [6]byte
	log    *slog.Logger
	timing Timing

	mu     sync.Mutex
	status string
	ssid   string
	ip     string
	apIP   string
	stop   chan struct{}
	done   chan struct{}
}

// errStopped ends the station's goroutine when the firmware stops.
var errStopped = errors.New("stopped")

// Start sets the Wi-Fi up as mgos_wifi_setup does and, with a station
// config enabled, starts connecting in the background.
func Start(cfg Config, aps []AP, mac [6]byte, log *slog.Logger, t *Timing) *Station {
	s := &Station{cfg: cfg, mac: mac, log: log, timing: defaultTiming, status: StatusDisconnected,
		stop: make(chan struct{}), done: make(chan struct{})}
	if t != nil {
		s.timing = *t
	}
	for _, a := range aps {
		s.aps = append(s.aps, a.withDefaults())
	}
	var stas []STAConfig
	for _, c := range cfg.STA {
		if c.Enable {
			stas = append(stas, c)
		}
	}
	switch {
	case cfg.AP.Enable && len(stas) == 0:
		s.info("WiFi mode: AP", "mgos_wifi.c", 342)
		s.setupAP()
	case cfg.AP.Enable:
		s.info("WiFi mode: AP+STA", "mgos_wifi.c", 348)
		s.setupAP()
	case len(stas) > 0:
		s.info("WiFi mode: STA", "mgos_wifi.c", 360)
	default:
		s.info("WiFi mode: off", "mgos_wifi.c", 369)
	}
	if len(stas) == 0 {
		close(s.done)
		return s
	}
	if cfg.Supervise != nil {
		go cfg.Supervise("WiFi", func() { s.run(stas) })
	} else {
		go s.run(stas)
	}
	return s
}

func (s *Station) info(msg, file string, line int) { s.log.Info(msg, console.Src(file, line)) }

func (s *Station) setupAP() {
	ap := s.cfg.AP
	s.log.Error(fmt.Sprintf("WiFi AP: SSID %s, channel %d", ap.SSID, ap.Channel), console.Src(s.glue(), 547))
	gw := ap.GW
	if gw == "" {
		gw = "(none)"
	}
	s.info(fmt.Sprintf("WiFi AP IP: %s/%s gw %s, DHCP range: %s - %s, NAT? 0", ap.IP, ap.Netmask, gw, ap.DHCPStart, ap.DHCPEnd), s.glue(), 616)
	s.mu.Lock()
	s.apIP = ap.IP
	s.mu.Unlock()
}

// glue is the wifi library's platform source file.
func (s *Station) glue() string {
	if s.cfg.Arch == "esp8266" {
		return "esp_wifi.c"
	}
	return "esp32xx_wifi.c"
}

// Info returns what Sys.GetInfo reports: STA IP, AP IP, status, SSID.
func (s *Station) Info() (staIP, apIP, status, ssid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ip, s.apIP, s.status, s.ssid
}

// Stop ends the station (the firmware is stopping).
func (s *Station) Stop() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *Station) sleep(d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-s.stop:
		return errStopped
	}
}

func (s *Station) set(status, ssid, ip string) {
	s.mu.Lock()
	s.status, s.ssid, s.ip = status, ssid, ip
	s.mu.Unlock()
}

// candidate is a scanned AP a config accepts.
type candidate struct {
	ap       AP
	cfg      STAConfig
	attempts int
}

func (s *Station) scan(stas []STAConfig, history map[string]int) []candidate {
	var out []candidate
	s.log.Debug(fmt.Sprintf("WiFi scan result: %d entries", len(s.aps)), console.Src("mgos_wifi_sta.c", 289))
	for i, a := range s.aps {
		reason := "no matching config"
		var match *STAConfig
		for j := range stas {
			c := &stas[j]
			if c.SSID != a.SSID {
				continue
			}
			if (a.Pass == "") != (c.Pass == "") { // auth mode must match
				continue
			}
			if c.BSSID != "" && !strings.EqualFold(c.BSSID, a.BSSID) {
				continue
			}
			match = c
			break
		}
		ok := false
		switch {
		case match == nil:
		case a.RSSI < s.cfg.RSSIThr:
			reason = "too weak"
		default:
			reason, ok = "ok", true
		}
		auth := 3 // WPA2_PSK
		if a.Pass == "" {
			auth = 0
		}
		s.log.Debug(fmt.Sprintf("  %d: SSID: %-32s, BSSID: %s auth: %d, ch: %3d, RSSI: %2d att %d - %t %s",
			i, a.SSID, a.BSSID, auth, a.Channel, a.RSSI, history[a.BSSID], ok, reason), console.Src("mgos_wifi_sta.c", 236))
		if ok {
			out = append(out, candidate{ap: a, cfg: *match, attempts: history[a.BSSID]})
		}
	}
	// Strongest first; among them, fewer failed attempts first.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && (out[j].attempts < out[j-1].attempts ||
			out[j].attempts == out[j-1].attempts && out[j].ap.RSSI > out[j-1].ap.RSSI); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func (s *Station) run(stas []STAConfig) {
	defer close(s.done)
	history := map[string]int{}
	for {
		s.set(StatusDisconnected, "", "")
		if s.sleep(s.timing.Scan) != nil {
			return
		}
		cands := s.scan(stas, history)
		if len(cands) == 0 {
			// The SDK reports the failed association attempt.
			s.info("WiFi STA: Disconnected, reason: 201", "mgos_wifi.c", 70)
			if s.sleep(s.cfg.ConnectTimeout) != nil {
				return
			}
			continue
		}
		for _, c := range cands {
			history[c.ap.BSSID]++
			s.info(fmt.Sprintf("Trying %s AP %s RSSI %d attempt %d", c.cfg.SSID, c.ap.BSSID, c.ap.RSSI, history[c.ap.BSSID]), "mgos_wifi_sta.c", 426)
			s.set(StatusConnecting, "", "")
			s.info("WiFi STA: connecting", "mgos_net.c", 78)
			if s.sleep(s.timing.Connect) != nil {
				return
			}
			if c.ap.Pass != c.cfg.Pass {
				s.info("WiFi STA: Disconnected, reason: 15", "mgos_wifi.c", 70) // 4WAY_HANDSHAKE_TIMEOUT
				s.info("WiFi STA: disconnected", "mgos_net.c", 75)
				s.info("Connect failed", "mgos_wifi_sta.c", 445)
				s.set(StatusDisconnected, "", "")
				if s.sleep(s.timing.Retry) != nil {
					return
				}
				continue
			}
			s.info(fmt.Sprintf("WiFi STA: Connected, BSSID %s ch %d RSSI %d", c.ap.BSSID, c.ap.Channel, c.ap.RSSI), "mgos_wifi.c", 83)
			s.set(StatusConnected, c.ap.SSID, "")
			s.info("WiFi STA: connected", "mgos_net.c", 81)
			ip, gw, mask := s.address(c)
			if c.cfg.IP != "" {
				s.info(fmt.Sprintf("WiFi STA IP: %s/%s gw %s", ip, mask, gw), s.glue(), 419)
			} else if s.sleep(s.timing.DHCP) != nil {
				return
			}
			history[c.ap.BSSID] = 0
			s.set(StatusGotIP, c.ap.SSID, ip)
			s.info(fmt.Sprintf("WiFi STA: ready, IP %s, GW %s, DNS %s, NTP %s", ip, gw, gw, "pool.ntp.org"), "mgos_net.c", 86)
			<-s.stop // connected for the rest of this boot
			return
		}
	}
}

// address returns the STA address: static config, or the DHCP lease the
// AP's network gives this MAC.
func (s *Station) address(c candidate) (ip, gw, mask string) {
	if c.cfg.IP != "" {
		return c.cfg.IP, c.cfg.GW, c.cfg.Netmask
	}
	p, err := netip.ParsePrefix(c.ap.Net)
	if err != nil || !p.Addr().Is4() {
		p = netip.MustParsePrefix("192.168.1.0/24")
	}
	p = p.Masked()
	base := p.Addr().As4()
	hostBits := 32 - p.Bits()
	span := uint32(1)<<hostBits - 3 // skip network, .1 gateway, broadcast
	if hostBits < 2 {
		span = 1
	}
	n := uint32(2) + (uint32(s.mac[4])<<8|uint32(s.mac[5]))%max(span, 1)
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	host := v + n
	gwv := v + 1
	m := ^uint32(0) << hostBits
	f := func(x uint32) string {
		return fmt.Sprintf("%d.%d.%d.%d", byte(x>>24), byte(x>>16), byte(x>>8), byte(x))
	}
	return f(host), f(gwv), f(m)
}
