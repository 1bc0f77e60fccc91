package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/mqtt"
	devtls "github.com/mosemu/mosemu/tls"
	"github.com/spf13/cobra"
)

func runCmd() *cobra.Command {
	var opts emu.Options
	var quiet, broker, timestamps bool
	var brokerAddr, externalBroker string
	var lo labOptions
	var wifiAPs []string
	var wifiAPsFile string
	var wires []string
	c := &cobra.Command{
		Use:   "run",
		Short: "Start a device and serve it until SIGINT/SIGTERM",
		Long: `Start a device from its state directory (created on first run) and
print where to connect: the HTTP/WebSocket RPC address and the serial pty.
The console log is mirrored to stderr unless --quiet.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !quiet {
				opts.Console = os.Stderr
				if timestamps {
					opts.Console = &stampWriter{w: os.Stderr, layout: time.StampMilli}
				}
			}
			opts.Serial = true
			if err := addWiFiAPs(&opts, wifiAPs, wifiAPsFile); err != nil {
				return err
			}
			for _, w := range wires {
				wire, err := emu.ParseWire(w)
				if err != nil {
					return err
				}
				opts.Wiring = append(opts.Wiring, wire)
			}
			if externalBroker != "" {
				opts.MQTTBroker, broker = externalBroker, false
			}
			if broker {
				addr, note, closeBroker, err := findBroker(brokerAddr)
				if err != nil {
					return err
				}
				defer closeBroker()
				fmt.Println("mosemu: MQTT: " + note)
				opts.MQTTBroker = addr
			}
			start := time.Now()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			seat, err := openSeat(ctx, opts, lo)
			if err != nil {
				return err
			}
			defer seat.Close()
			d := seat.Device()
			bootErr := d.Start(ctx)
			if errors.Is(bootErr, emu.ErrHostBind) {
				return fmt.Errorf("the device cannot start: %w", bootErr)
			}
			if opts.FlashEncryption && !d.Identity().FlashEncryption {
				if err := d.SetBootloaderFlashEncryption(true); err != nil {
					return err
				}
				bootErr = d.Reboot()
			}
			if bootErr != nil {
				printNotBooted(d, bootErr)
				go announceWhenUp(ctx, d, start)
			} else {
				printWhere(d, time.Since(start))
			}
			if lo.ui != "" {
				ui, err := startUI(seat, lo)
				if err != nil {
					return err
				}
				defer ui.Close()
			}
			<-ctx.Done()
			fmt.Fprintln(os.Stderr, "mosemu: shutting down")
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&opts.Arch, "arch", "", "board: esp32 or esp8266 (default esp32; fixed once the state exists)")
	f.StringVar(&opts.StateDir, "state", "state/default", "state directory (flash, efuses, ATECC)")
	f.StringVar(&opts.HTTPAddr, "http", "127.0.0.1:8080", "host address of the device's HTTP server (port 0 picks one)")
	f.BoolVar(&opts.FlashEncryption, "flash-encryption", false, "new device: bootloader built with flash encryption (first boot encrypts and burns efuses)")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not mirror the console log to stderr")
	f.BoolVar(&opts.BaudTiming, "baud-timing", false, "make the serial pty as slow as the baud rate the host set (115200 at reset; CHANGE_BAUDRATE and flasher stubs honoured)")
	f.BoolVar(&opts.TLSHandshakeLatency, "tls-latency", false, "answer TLS handshakes as slowly as the real board (ESP32 1-3 s, ESP8266 7-15 s)")
	f.BoolVar(&opts.TLSDynamicBuffers, "mbedtls-dynamic-buffers", false, fmt.Sprintf("model mbedTLS with the dynamic-buffer patch (~%d KiB per idle TLS connection instead of ~%d KiB)", devtls.CostTLSDynamic>>10, devtls.CostTLSStatic>>10))
	f.BoolVar(&broker, "broker", true, "connect the device to an MQTT broker at --broker-addr: the one already there (e.g. another mosemu's), else an embedded one (unless its config names another mqtt.server)")
	f.StringVar(&brokerAddr, "broker-addr", "127.0.0.1:1883", "MQTT broker address: used if a broker answers there, else an embedded broker listens there (or on a free port if it is taken)")
	f.StringVar(&opts.SerialLink, "serial-link", "", "symlink kept pointing to the serial pty while the device runs (default STATE/serial; - for none)")
	f.BoolVar(&timestamps, "timestamps", false, "prefix each console line mirrored to stderr with the time, as mos console does ([Jan _2 15:04:05.000])")
	f.StringVar(&externalBroker, "external-broker", "", "connect the device to this MQTT broker (host:port) instead of an embedded or found one")
	f.StringArrayVar(&wifiAPs, "wifi-ap", nil, "an access point the device's Wi-Fi sees, SSID[:PASSWORD[:RSSI]] (repeatable)")
	f.StringVar(&wifiAPsFile, "wifi-aps", "", `JSON file of access points: [{"ssid":"Lab","pass":"secret123","rssi":-60,"channel":6,"net":"10.0.0.0/24"}]`)
	f.StringArrayVar(&wires, "wire", nil, "wire a part to the board's GPIOs, kept in the state: atecc608a:sda=12,scl=14,addr=0x60 or atecc608a:none (default: ESP8266 SDA 12/SCL 14, ESP32 SDA 32/SCL 33, at 0x60)")
	lo.flags(f)
	return c
}

// printNotBooted says why the app did not come up and where the ROM
// loader answers (the chip keeps resetting until something is flashed).
func printNotBooted(d *emu.Device, err error) {
	fmt.Printf("mosemu: %s device did not boot: %v\n", d.Identity().Arch, err)
	if p := d.SerialPath(); p != "" {
		fmt.Printf("  ROM loader (download mode, any time): esptool.py --port %s --before no_reset flash_id\n", p)
		fmt.Printf("  Re-flash: mos flash --port %s <firmware.zip>\n", p)
	}
}

// announceWhenUp prints where to connect once a re-flashed device boots.
func announceWhenUp(ctx context.Context, d *emu.Device, start time.Time) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if d.Booted() {
				printWhere(d, time.Since(start))
				return
			}
		}
	}
}

func printWhere(d *emu.Device, took time.Duration) {
	id := d.Identity()
	state := "up"
	if d.BootError() != nil {
		state = "halted (firmware not running)"
	}
	fmt.Printf("mosemu: %s device %s in %v (state %s)\n", id.Arch, state, took.Round(time.Millisecond), d.StateDir())
	if a := d.HTTPAddr(); a != "" && d.HTTPServing() {
		ws, web, k := "ws", "http", ""
		if d.HTTPTLS() {
			ws, web, k = "wss", "https", "-k "
		}
		fmt.Printf("  RPC over WebSocket: mos --port %s://%s/rpc call Sys.GetInfo\n", ws, a)
		fmt.Printf("  RPC over HTTP:      curl %s%s://%s/rpc/Sys.GetInfo\n", k, web, a)
		if la := d.HTTPListenAddr(); la != "" {
			fmt.Printf("  (the device's http.listen_addr %s is served on the host at %s; --http changes it)\n", la, a)
		}
	}
	if p := d.SerialPath(); p != "" {
		if l := d.SerialLink(); l != "" {
			fmt.Printf("  Serial (console, RPC, ROM loader): mos --port %s console   (%s -> %s)\n", l, l, p)
		} else {
			fmt.Printf("  Serial (console, RPC, ROM loader): mos --port %s console\n", p)
		}
	}
	if a := d.MQTTBroker(); a != "" {
		fmt.Printf("  RPC over MQTT:      mos --port mqtt://%s/%s call Sys.GetInfo\n", a, d.DeviceID())
	}
}

// findBroker returns the MQTT broker the device should use: one already
// answering at addr (another mosemu's, or a mosquitto), else an embedded
// broker listening on addr, else, when addr is taken by something that is
// not an MQTT broker, an embedded broker on a free port. note says which, in
// words for the banner; stop closes an embedded broker.
func findBroker(addr string) (brokerAddr, note string, stop func(), err error) {
	perr := mqtt.Probe(addr, time.Second)
	if perr == nil {
		return addr, fmt.Sprintf("using the broker already answering on %s (another mosemu run?); the device loses it when that one stops", addr), func() {}, nil
	}
	b, err := mqtt.StartBroker(addr, nil)
	if err == nil {
		return b.Addr(), "embedded broker on " + b.Addr(), func() { b.Close() }, nil
	}
	taken := err
	if b, err = mqtt.StartBroker("127.0.0.1:0", nil); err != nil {
		return "", "", nil, fmt.Errorf("embedded MQTT broker: %w", err)
	}
	what := fmt.Sprintf("%s is taken by something that is not an MQTT broker (%v)", addr, perr)
	if !errors.Is(taken, syscall.EADDRINUSE) {
		what = fmt.Sprintf("no MQTT broker answers on %s (%v) and an embedded one cannot listen there (%v)", addr, perr, taken)
	}
	return b.Addr(), what + ": embedded broker on " + b.Addr() + " instead", func() { b.Close() }, nil
}

// stampWriter prefixes each line written to w with the current time, as
// mos console --timestamp does. The console writes whole lines.
type stampWriter struct {
	w      io.Writer
	layout string
}

func (s *stampWriter) Write(b []byte) (int, error) {
	n := len(b)
	var out []byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n') + 1
		if i == 0 {
			i = len(b)
		}
		out = append(out, '[')
		out = time.Now().AppendFormat(out, s.layout)
		out = append(out, "] "...)
		out = append(out, b[:i]...)
		b = b[i:]
	}
	_, err := s.w.Write(out)
	return n, err
}
