package main

import (
	"fmt"
	"os"

	"github.com/mosemu/mosemu/emu"
	"github.com/spf13/cobra"
)

func fwBundle8266Cmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "fw-bundle-esp8266",
		Short: "Write the emulated ESP8266 firmware as a mos firmware zip (mos flash)",
		Long: `Write the mosemu firmware for an ESP8266 as a Mongoose OS build packages
it: rBoot at 0x0, its config sector, the app in slot 0 (slot 1 for OTA),
an empty root filesystem and the RF calibration sector. Flash it with
` + "`mos --platform esp8266 --port PTY flash fw-esp8266.zip`" + ` to restore a board.`,
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			b, err := emu.FirmwareZip8266(4 << 20)
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
	c.Flags().StringVarP(&out, "out", "o", "fw-esp8266.zip", "output file")
	return c
}
