package main

import (
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/wifi"
)

// addWiFiAPs adds the --wifi-ap and --wifi-aps access points to opts.
func addWiFiAPs(opts *emu.Options, flags []string, file string) error {
	if file != "" {
		aps, err := wifi.LoadAPs(file)
		if err != nil {
			return err
		}
		opts.WiFiAPs = append(opts.WiFiAPs, aps...)
	}
	for _, f := range flags {
		ap, err := wifi.ParseAP(f)
		if err != nil {
			return err
		}
		opts.WiFiAPs = append(opts.WiFiAPs, ap)
	}
	return nil
}
