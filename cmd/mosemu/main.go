// Command mosemu runs emulated Mongoose OS devices and inspects their state.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "mosemu",
		Short:         "An emulated Mongoose OS device (ESP32 / ESP8266)",
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("mosemu {{.Version}}\n")
	root.AddCommand(runCmd(), fleetCmd(), efuseCmd(), flashCmd(), factoryResetCmd(), benchCmd(), fwBundleCmd(), fwBundle8266Cmd())
	root.AddCommand(snapshotCmd(), labCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mosemu:", err)
		os.Exit(1)
	}
}

// version describes this binary from its build info: the module version
// (a tag, a pseudo-version, or "(devel)"), the VCS revision and time it was
// built from (with "+dirty" for uncommitted changes) and the Go toolchain.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(no build info) " + runtime.Version()
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	parts := []string{v}
	if rev != "" {
		parts = append(parts, "revision "+rev[:min(12, len(rev))]+dirty)
	} else {
		parts = append(parts, "no VCS revision in the build info (built outside a git checkout, or with -buildvcs=false)")
	}
	if at != "" {
		parts = append(parts, at)
	}
	return fmt.Sprintf("%s, %s %s/%s", strings.Join(parts, ", "), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// exactArgs is cobra.ExactArgs with an error that says which command takes
// what (cobra's NoArgs says "unknown command", which misleads when the
// argument is a mistyped flag value).
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		if n == 0 {
			return fmt.Errorf("%q takes no arguments, got %q (options are flags: see %s --help)", cmd.CommandPath(), strings.Join(args, " "), cmd.CommandPath())
		}
		return fmt.Errorf("%q takes %d arguments (%s), got %d (see %s --help)", cmd.CommandPath(), n, cmd.Use, len(args), cmd.CommandPath())
	}
}
