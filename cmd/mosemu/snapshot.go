package main

import (
	"fmt"

	"github.com/mosemu/mosemu/emu/snapshot"
	"github.com/spf13/cobra"
)

func snapshotCmd() *cobra.Command {
	var state string
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "Save, restore and list snapshots of a device's whole state",
		Long: `A snapshot is a copy of every state file (flash, efuses, ATECC608A,
identity) kept in DIR/snapshots/NAME. Save and restore refuse while the
device runs in another process: use the lab console's buttons then, or
stop it and start it again with mosemu run --reset-to NAME.`,
	}
	c.PersistentFlags().StringVar(&state, "state", "state/default", "state directory")
	c.AddCommand(&cobra.Command{
		Use:   "save NAME",
		Short: "Save the device's state as NAME (replacing an older NAME)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := snapshot.Store{StateDir: state}.Save(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved snapshot %s of %s: %d files, %d KiB\n", info.Name, state, len(info.Files), info.Bytes>>10)
			return nil
		},
	}, &cobra.Command{
		Use:   "restore NAME",
		Short: "Put the device back in the state saved as NAME",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := (snapshot.Store{StateDir: state}).Restore(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s from snapshot %s\n", state, args[0])
			return nil
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List the snapshots of the device",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := snapshot.Store{StateDir: state}.List()
			if err != nil {
				return err
			}
			for _, s := range list {
				fmt.Fprintf(cmd.OutOrStdout(), "%-24s %s  %d files, %d KiB\n", s.Name, s.Created.Format("2006-01-02 15:04:05Z"), len(s.Files), s.Bytes>>10)
			}
			return nil
		},
	})
	return c
}
