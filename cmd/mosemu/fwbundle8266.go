package main

import (
	"fmt"
	"os"
	"time"

	"github.com/mosemu/mosemu/emu"
	"github.com/spf13/cobra"
)

func fwBundle8266Cmd() *cobra.Command {
	var out, version, buildID, name, fsDir string
	c := &cobra.Command{
		Use:   "fw-bundle-esp8266",
		Short: "Write the emulated ESP8266 firmware as a mos build firmware zip (mos flash, mos ota)",
		Long: `Write the mosemu firmware for an ESP8266 as a Mongoose OS build packages
it: a folder <name>-<version>/ with manifest.json first, then the root
filesystem image (conf0.json, ca.pem and the files of --fs), the app
(slot 0, slot 1 for OTA) and rBoot; the manifest also lists rBoot's config
sector and the RF calibration sector. Flash it with
` + "`mos --platform esp8266 --port PTY flash fw-esp8266.zip`" + ` to restore a board,
or update a running device with ` + "`mos --port ws://HOST/rpc ota fw-esp8266.zip`" + `
(give it a --version: Sys.GetInfo then reports that fw_version and fw_id).`,
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			files, err := readFSDir(fsDir)
			if err != nil {
				return err
			}
			built := time.Now().UTC()
			if version != "" && buildID == "" {
				buildID = built.Format("20060102-150405") + "/" + version + "@mosemu"
			}
			b, err := emu.FirmwareZip8266(emu.Bundle8266{Name: name, Version: version, BuildID: buildID, Built: built, Files: files})
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			fmt.Printf("wrote %s (%d bytes)\n", out, len(b))
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&out, "out", "o", "fw-esp8266.zip", "output file")
	f.StringVar(&version, "version", "", "firmware version (default: the factory build's, "+emu.FWVersion+")")
	f.StringVar(&buildID, "build-id", "", "build id, fw_id after an update (default: TIMESTAMP/VERSION@mosemu with --version, else the factory build's)")
	f.StringVar(&name, "name", emu.AppName, "app name")
	f.StringVar(&fsDir, "fs", "", "directory whose files go into the fs image")
	return c
}
