package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/mosemu/mosemu/emu/fleet"
	"github.com/mosemu/mosemu/mqtt"
	"github.com/spf13/cobra"
)

func fleetCmd() *cobra.Command {
	var o fleet.Options
	var brokerAddr string
	var exitAfter time.Duration
	var uiAddr string
	c := &cobra.Command{
		Use:   "fleet",
		Short: "Run many devices in one process, connected to an MQTT broker",
		Long: `Run --count devices, each with its own state (DIR/dev-NNNN), id, MAC and
HTTP port, started at --rate devices per second and connected to the MQTT
broker (an embedded one unless --broker-addr names an existing broker).
Prints a summary, then serves until SIGINT/SIGTERM (or --exit-after).`,
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if brokerAddr == "" {
				b, err := mqtt.StartBroker("127.0.0.1:0", nil)
				if err != nil {
					return err
				}
				defer b.Close()
				o.MQTTBroker = b.Addr()
			} else {
				o.MQTTBroker = brokerAddr
			}
			start := time.Now()
			f, err := fleet.Start(ctx, o)
			if err != nil {
				return err
			}
			defer f.Close()
			booted := time.Since(start)
			connected := f.WaitConnected(2 * time.Minute)
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			fmt.Printf("mosemu fleet: %d devices started in %v, %d failed, %d/%d connected to MQTT %s\n",
				len(f.Devices), booted.Round(time.Millisecond), len(f.Failed), connected, len(f.Devices), o.MQTTBroker)
			fmt.Printf("  memory: %d MiB from the OS, %d MiB heap in use; %d goroutines\n", ms.Sys>>20, ms.HeapInuse>>20, runtime.NumGoroutine())
			for _, e := range f.Failed {
				fmt.Println("  failed:", e)
			}
			if len(f.Devices) > 0 {
				d := f.Devices[0]
				fmt.Printf("  e.g. mos --port mqtt://%s/%s call Sys.GetInfo   (or ws://%s/rpc)\n", o.MQTTBroker, d.DeviceID(), d.HTTPAddr())
			}
			if uiAddr != "" {
				ui, err := fleetUI(uiAddr, f.Devices)
				if err != nil {
					return err
				}
				defer ui.Close()
			}
			if exitAfter > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(exitAfter):
				}
				return nil
			}
			<-ctx.Done()
			return nil
		},
	}
	fl := c.Flags()
	fl.IntVar(&o.Count, "count", 10, "number of devices")
	fl.StringVar(&o.StateDir, "state", "state/fleet", "directory holding one state directory per device")
	fl.StringVar(&o.Arch, "arch", "", "esp32 (default) or esp8266")
	fl.Float64Var(&o.Rate, "rate", 0, "device arrivals per second (0 = as fast as possible)")
	fl.StringVar(&brokerAddr, "broker-addr", "", "existing MQTT broker host:port (default: an embedded broker)")
	fl.DurationVar(&exitAfter, "exit-after", 0, "stop after this long (0 = run until interrupted)")
	fl.StringVar(&uiAddr, "ui", "", "serve the lab console (a list of the devices, a page for each) on this host address")
	return c
}
