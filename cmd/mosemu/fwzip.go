package main

import (
	"fmt"
	"os"

	"github.com/mosemu/mosemu/emu"
	"github.com/spf13/cobra"
)

func fwzipCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fwzip OUT.zip",
		Short: "Write the emulated ESP8266 firmware as a mos firmware zip (mos flash OUT.zip)",
		Long: `Write the mosemu firmware for an ESP8266 as a Mongoose OS build packages
it: rBoot at 0x0, its config sector, the app in slot 0 (slot 1 for OTA),
an empty root filesystem and the RF calibration sector. Flash it with
` + "`mos --platform esp8266 --port PTY flash OUT.zip`" + ` to restore a board.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			b, err := emu.FirmwareZip8266(4 << 20)
			if err != nil {
				return err
			}
			if err := os.WriteFile(args[0], b, 0o644); err != nil {
				return err
			}
			fmt.Printf("wrote %s (%d bytes)\n", args[0], len(b))
			return nil
		},
	}
}
