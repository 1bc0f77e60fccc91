package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// SysInfo is what Sys.GetInfo reports.
type SysInfo struct {
	ID, App, FWVersion, FWID, MGVersion, MGID string
	MAC                                       string // 12 uppercase hex digits
	Arch                                      string
	Uptime                                    int64 // seconds
	PublicKey                                 string
	RAMSize, RAMFree, RAMMinFree              int64
	FSSize, FSFree                            int64
	WiFi                                      *WiFiInfo // nil without the wifi lib
	// Crashes counts firmware crashes (panics caught by the device's
	// supervisor) since the process started; reported only when non-zero,
	// so that a healthy device answers exactly as the firmware does.
	Crashes int64
}

// WiFiInfo is the "wifi" object of Sys.GetInfo.
type WiFiInfo struct{ StaIP, APIP, Status, SSID string }

// SysDevice is what the Sys service needs from the device.
type SysDevice interface {
	Info() SysInfo
	// Reboot restarts the device after delay.
	Reboot(delay time.Duration)
	// SetDebugLevel changes debug.level at runtime.
	SetDebugLevel(level int)
}

// RegisterSys registers Sys.Reboot, Sys.GetInfo and Sys.SetDebug.
func RegisterSys(r Registrar, dev SysDevice) {
	r.Register("Sys.Reboot", "{delay_ms: %d}", func(_ context.Context, req *Request) (json.RawMessage, error) {
		var a struct {
			DelayMS *int `json:"delay_ms"`
			Abort   bool `json:"abort"`
		}
		json.Unmarshal(req.Params, &a)
		delay := 100
		if a.DelayMS != nil {
			delay = *a.DelayMS
		}
		if delay < 0 || delay > math.MaxInt32 { // the firmware's delay_ms is a C int
			return nil, Errorf(400, "invalid delay value")
		}
		dev.Reboot(time.Duration(delay) * time.Millisecond)
		return nil, nil
	})
	r.Register("Sys.GetInfo", "", func(context.Context, *Request) (json.RawMessage, error) {
		return FormatSysInfo(dev.Info()), nil
	})
	r.Register("Sys.SetDebug", "{udp_log_addr: %Q, level: %d, file_level: %Q}", func(_ context.Context, req *Request) (json.RawMessage, error) {
		var a struct {
			Level *int `json:"level"`
		}
		json.Unmarshal(req.Params, &a)
		if a.Level != nil {
			if *a.Level < -1 || *a.Level > 4 {
				return nil, Errorf(400, "invalid level")
			}
			dev.SetDebugLevel(*a.Level)
		}
		return nil, &Error{Code: 0}
	})
}

// FormatSysInfo renders Sys.GetInfo's result with the firmware's key order
// and spacing.
func FormatSysInfo(s SysInfo) json.RawMessage {
	var b strings.Builder
	pk := "null"
	if s.PublicKey != "" {
		pk = quote(s.PublicKey)
	}
	fmt.Fprintf(&b, `{"id": %s, "app": %s, "fw_version": %s, "fw_id": %s, "mg_version": %s, "mg_id": %s, "mac": %s, "arch": %s, "uptime": %d, "public_key": %s, "ram_size": %d, "ram_free": %d, "ram_min_free": %d, "fs_size": %d, "fs_free": %d`,
		quote(s.ID), quote(s.App), quote(s.FWVersion), quote(s.FWID), quote(s.MGVersion), quote(s.MGID),
		quote(s.MAC), quote(s.Arch), s.Uptime, pk, s.RAMSize, s.RAMFree, s.RAMMinFree, s.FSSize, s.FSFree)
	if w := s.WiFi; w != nil {
		fmt.Fprintf(&b, `,"wifi": {"sta_ip": %s, "ap_ip": %s, "status": %s, "ssid": %s}`,
			quote(w.StaIP), quote(w.APIP), quote(w.Status), quote(w.SSID))
	}
	if s.Crashes > 0 {
		fmt.Fprintf(&b, `, "crashes": %d`, s.Crashes)
	}
	b.WriteByte('}')
	return json.RawMessage(b.String())
}
