// Command mosemu runs emulated Mongoose OS devices and inspects their state.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "mosemu",
		Short:         "An emulated Mongoose OS device (ESP32 / ESP8266)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), fleetCmd(), efuseCmd(), flashCmd(), benchCmd(), fwBundleCmd(), fwBundle8266Cmd())
	root.AddCommand(snapshotCmd(), labCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mosemu:", err)
		os.Exit(1)
	}
}
