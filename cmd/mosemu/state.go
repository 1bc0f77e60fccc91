package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/spf13/cobra"
)

func flashCmd() *cobra.Command {
	c := &cobra.Command{Use: "flash", Short: "Inspect a device's SPI flash offline"}
	var state string
	var hexOut bool
	dump := &cobra.Command{
		Use:   "dump ADDR LEN",
		Short: "Write LEN bytes of raw flash at ADDR to stdout (what a flash-read shows)",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			addr, err := strconv.ParseInt(args[0], 0, 64)
			if err != nil {
				return fmt.Errorf("bad address %q", args[0])
			}
			n, err := strconv.ParseInt(args[1], 0, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("bad length %q", args[1])
			}
			b, err := readFlash(state, addr, n)
			if err != nil {
				return err
			}
			if hexOut {
				fmt.Print(hex.Dump(b))
				return nil
			}
			_, err = os.Stdout.Write(b)
			return err
		},
	}
	dump.Flags().StringVar(&state, "state", "state/default", "state directory")
	dump.Flags().BoolVar(&hexOut, "hex", false, "print a hex dump instead of raw bytes")
	c.AddCommand(dump)
	return c
}

// readFlash reads the persisted flash image of a device that may be running
// (the image is written through, so it is always current).
func readFlash(state string, addr, n int64) ([]byte, error) {
	st, err := os.Stat(filepath.Join(state, emu.FlashFile))
	if err != nil {
		return nil, err
	}
	chip, err := flash.Open(filepath.Join(state, emu.FlashFile), st.Size())
	if err != nil {
		return nil, err
	}
	defer chip.Close()
	b := make([]byte, n)
	if _, err := chip.ReadAt(b, addr); err != nil {
		return nil, err
	}
	return b, nil
}
