package main

import (
	"fmt"

	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/snapshot"
	"github.com/spf13/cobra"
)

func factoryResetCmd() *cobra.Command {
	var state string
	var all bool
	c := &cobra.Command{
		Use:   "factory-reset",
		Short: "Erase a stopped device's config and files, as a reflash with mos flash does",
		Long: `Return a stopped device to the state a reflash with "mos flash" leaves:
the root filesystem partition (config levels conf1..conf9, rpc_auth.txt,
ACL files and every other file) is erased; the next start formats it and
boots with the firmware defaults. The efuses (MAC, flash encryption) and the
ATECC608A are kept, as a reflash keeps them.

--all also removes the flash image, the efuses and the ATECC608A state: the
next start is the same unit (arch, MAC, serial numbers from device.json)
fresh from the factory.

Stop the device first (Ctrl-C): a running device keeps its flash in memory.
A running device (its state lock held, or its STATE/serial link pointing to a
live pty) is refused.`,
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			if running, err := snapshot.Running(state); err != nil || running {
				if err == nil {
					err = fmt.Errorf("%s: the device is running: stop it first (Ctrl-C)", state)
				}
				return err
			}
			r, err := emu.FactoryReset(state, all)
			if err != nil {
				return err
			}
			for _, e := range r.Erased {
				fmt.Printf("erased: %s\n", e)
			}
			for _, k := range r.Kept {
				fmt.Printf("kept:   %s\n", k)
			}
			return nil
		},
	}
	c.Flags().StringVar(&state, "state", "state/default", "state directory of the (stopped) device")
	c.Flags().BoolVar(&all, "all", false, "erase everything: flash, efuses and ATECC608A (keeps the unit's identity)")
	return c
}
