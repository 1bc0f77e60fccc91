package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/mosemu/mosemu/lab"
	"github.com/spf13/cobra"
)

func labCmd() *cobra.Command {
	var state string
	var force, asJSON, dyn bool
	c := &cobra.Command{Use: "lab", Short: "Workshop labs: build a lab's starting device, grade a student's fix"}
	start := &cobra.Command{
		Use:   "start LAB",
		Short: "Build the lab's starting device in --state (and save it as snapshot \"start\")",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Load(args[0])
			if err != nil {
				return err
			}
			if err := l.Start(context.Background(), state, force); err != nil {
				return err
			}
			flags := ""
			if l.Device.TLSLatency {
				flags += " --tls-latency"
			}
			if l.Device.MbedTLSDynamicBuffers {
				flags += " --mbedtls-dynamic-buffers"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %q ready in %s\n\n%s\n  run it:    mosemu run --state %s --ui 127.0.0.1:9090 --lab %s%s\n  grade it:  mosemu lab check %s --state %s\n  start over: mosemu run --state %s --reset-to %s ...\n",
				l.Title, state, l.Description, state, args[0], flags, args[0], state, state, lab.StartSnapshot)
			return nil
		},
	}
	start.Flags().BoolVar(&force, "force", false, "replace a device already in --state")
	check := &cobra.Command{
		Use:   "check LAB",
		Short: "Grade the device in --state against the lab's goals (exit status 0 when all are met)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Load(args[0])
			if err != nil {
				return err
			}
			r, err := l.CheckWith(context.Background(), state, lab.CheckOptions{MbedTLSDynamicBuffers: dyn})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, _ := json.MarshalIndent(r, "", "  ")
				fmt.Fprintln(out, string(b))
			} else {
				fmt.Fprintf(out, "%s\n", r.Lab)
				met := 0
				for _, g := range r.Goals {
					mark := "not yet"
					if g.Passed {
						mark, met = "passed ", met+1
					}
					fmt.Fprintf(out, "  %s  %s\n           %s\n", mark, g.Name, g.Evidence)
				}
				fmt.Fprintf(out, "%d of %d goals met\n", met, len(r.Goals))
			}
			if !r.Passed {
				cmd.SilenceErrors = true
				os.Exit(2)
			}
			return nil
		},
	}
	check.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	check.Flags().BoolVar(&dyn, "mbedtls-dynamic-buffers", false, "grade the device as run with --mbedtls-dynamic-buffers")
	show := &cobra.Command{
		Use:   "show LAB",
		Short: "Print a lab's description, goals and documented solution",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Load(args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s\n\n%s\nGoals:\n", l.Title, l.Description)
			for _, g := range l.Goals {
				fmt.Fprintf(out, "  - %s\n", g.Name)
			}
			fmt.Fprintf(out, "\nSolution:\n%s", l.Solution)
			return nil
		},
	}
	c.PersistentFlags().StringVar(&state, "state", "state/lab", "state directory of the lab's device")
	c.AddCommand(start, check, show)
	return c
}
