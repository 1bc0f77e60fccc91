package emu

import (
	"time"

	"github.com/mosemu/mosemu/emu/wifi"
	"github.com/mosemu/mosemu/rpc"
)

// startWiFi brings the Wi-Fi up from the wifi.* config (mgos_wifi_setup).
func (d *Device) startWiFi(fw *firmware) {
	c := fw.cfg.Get()
	var wc wifi.Config
	wc.AP.Enable = c.Bool("wifi.ap.enable")
	wc.AP.SSID = c.String("wifi.ap.ssid")
	wc.AP.Channel = c.Int("wifi.ap.channel")
	wc.AP.IP, wc.AP.Netmask, wc.AP.GW = c.String("wifi.ap.ip"), c.String("wifi.ap.netmask"), c.String("wifi.ap.gw")
	wc.AP.DHCPStart, wc.AP.DHCPEnd = c.String("wifi.ap.dhcp_start"), c.String("wifi.ap.dhcp_end")
	for _, k := range []string{"wifi.sta", "wifi.sta1", "wifi.sta2"} {
		wc.STA = append(wc.STA, wifi.STAConfig{Enable: c.Bool(k + ".enable"), SSID: c.String(k + ".ssid"),
			Pass: c.String(k + ".pass"), BSSID: c.String(k + ".bssid"), IP: c.String(k + ".ip"),
			Netmask: c.String(k + ".netmask"), GW: c.String(k + ".gw"), User: c.String(k + ".user"), Cert: c.String(k + ".cert")})
	}
	wc.Arch = d.board.Arch
	wc.ConnectTimeout = time.Duration(c.Int("wifi.sta_connect_timeout")) * time.Second
	wc.RSSIThr = c.Int("wifi.sta_rssi_thr")
	wc.Supervise = d.protect
	fw.wifi = wifi.Start(wc, d.opts.WiFiAPs, d.mac(), d.log, nil)
	fw.onStop(fw.wifi.Stop)
}

// wifiInfo is the "wifi" object of Sys.GetInfo.
func (fw *firmware) wifiInfo() *rpc.WiFiInfo {
	if fw.wifi == nil {
		return nil
	}
	sta, ap, status, ssid := fw.wifi.Info()
	return &rpc.WiFiInfo{StaIP: sta, APIP: ap, Status: status, SSID: ssid}
}
