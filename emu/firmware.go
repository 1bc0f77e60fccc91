package emu

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	atcahost "github.com/mosemu/mosemu/atca/host"
	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/httpd"
	"github.com/mosemu/mosemu/mqtt"
	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/auth"
	devtls "github.com/mosemu/mosemu/tls"
	"github.com/mosemu/mosemu/tls/tls12"
)

// startFirmware brings up what Mongoose OS initialises after mounting the
// root filesystem: config, RPC, HTTP server, UART channel.
func (d *Device) startFirmware(fw *firmware) error {
	loader := &configs.Loader{FS: fw.fs, Schema: d.schema(), Log: d.log, MAC: d.mac()}
	cfg, err := loader.Load(9, true)
	if err != nil {
		return fmt.Errorf("boot: failed to load config: %v", err)
	}
	fw.cfg = configs.NewStore(loader, cfg)
	d.out.SetLevel(cfg.Int("debug.level"))

	disp := rpc.NewDispatcher(func() string { return fw.cfg.Get().String("device.id") }, d.log)
	disp.MaxFrameSize = func() int { return fw.cfg.Get().Int("rpc.max_frame_size") }
	disp.Lockout = func() *rpc.Error {
		if left := time.Until(d.rebootAt()); left > 0 && left < 100*time.Millisecond {
			return rpc.Errorf(418, "shutting down in %d ms", left.Milliseconds())
		}
		return nil
	}
	disp.Guard = &auth.Guard{FS: fw.fs, Log: d.log, Settings: func() auth.Settings {
		c := fw.cfg.Get()
		return auth.Settings{ACL: c.String("rpc.acl"), ACLFile: c.String("rpc.acl_file"),
			AuthDomain: c.String("rpc.auth_domain"), AuthFile: c.String("rpc.auth_file"), AuthAlgo: c.Int("rpc.auth_algo")}
	}}
	disp.OnPanic = d.crash
	fw.disp = disp
	d.traceRPC(disp)
	rpc.RegisterFS(disp, fw.fs, d.log)
	rpc.RegisterFSDirs(disp, fw.fs, d.log)
	configs.RegisterService(disp, fw.cfg, rebooter{d}, d.log)
	if cfg.Bool("rpc.service_sys_enable") {
		rpc.RegisterSys(disp, &sysDevice{d: d, fw: fw})
	}
	bus, err := d.startI2C(cfg) // wiring.go
	if err != nil {
		return err
	}
	if err := d.startATCA(fw, bus); err != nil {
		return err
	}
	d.startOTA(fw)
	d.startWiFi(fw)
	if d.opts.Services != nil {
		d.opts.Services(disp)
	}
	if cfg.Bool("http.enable") {
		if err := d.startHTTP(fw); err != nil {
			return err
		}
	}
	if d.port != nil && cfg.Bool("rpc.enable") && cfg.Int("rpc.uart.uart_no") == 0 {
		u := &rpc.UARTChannel{Out: d.port, Handler: disp, Log: d.log, Info: "UART0",
			MaxFrame: func() int { return fw.cfg.Get().Int("rpc.max_frame_size") }}
		d.port.SetSoftwareFlowControl(cfg.Int("rpc.uart.fc_type") == 2)
		d.uartSink = d.protected("UART0 RX", u.Feed) // the chip's UART hands it what is not for the ROM (boot runs under d.mu)
		fw.onStop(func() {
			d.uartSink = nil
			u.Close()
		})
		d.log.Info("0x3ffb2e40 UART0", console.Src("mgos_rpc_channel_uart.c", 238))
	}
	d.startMQTT(fw)
	d.log.Info(fmt.Sprintf("Init done, RAM: %d total, %d free, %d min free", d.board.RAMSize, d.board.RAMFreeAtBoot, d.board.RAMFreeAtBoot-1024), console.Src("mgos_init.c", 85))
	return nil
}

// startHTTP starts the firmware's HTTP server on the device's host address.
func (d *Device) startHTTP(fw *firmware) error {
	cfg := fw.cfg.Get()
	var tc *tls12.Config
	cost, ssl := devtls.CostTCP, ""
	if cert := cfg.String("http.ssl_cert"); cert != "" {
		var err error
		tc, err = devtls.ServerConfig(fw.fs, cert, cfg.String("http.ssl_key"), cfg.String("http.ssl_ca_cert"), fw.tlsOptions(d))
		if err != nil {
			d.log.Error("Error starting HTTP server: "+err.Error(), console.Src("mgos_http_server.c", 530))
			return nil
		}
		cost, ssl = devtls.CostTLSStatic, " (SSL)"
		if d.opts.TLSDynamicBuffers {
			cost = devtls.CostTLSDynamic
		}
	}
	tcp, err := net.Listen("tcp", d.httpAddr)
	if err != nil {
		return fmt.Errorf("boot: HTTP server: %w: %w", ErrHostBind, err)
	}
	d.httpUp = true
	fw.onStop(func() { d.httpUp = false })
	d.httpAddr = tcp.Addr().String() // keep the port across reboots
	d.httpTLS, d.httpPort = tc != nil, cfg.String("http.listen_addr")
	var l net.Listener = &devtls.Listener{Listener: tcp, RAM: fw.ram, Cost: cost, Log: d.log}
	if tc != nil {
		if d.opts.TLSHandshakeLatency {
			lat := devtls.LatencyESP32
			if d.board.Arch == "esp8266" {
				lat = devtls.LatencyESP8266
			}
			l = &devtls.SlowListener{Listener: l, Min: lat[0], Max: lat[1]}
		}
		l = devtls.NewListener(&devtls.RecordListener{Listener: l, Log: d.log}, tc)
	}
	mux := http.NewServeMux()
	rpcCh := &rpc.HTTPChannel{Handler: fw.disp,
		Switches: func() rpc.Switches {
			c := fw.cfg.Get()
			return rpc.Switches{Enable: c.Bool("rpc.enable"), HTTPEnable: c.Bool("rpc.http_enable"), WSEnable: c.Bool("rpc.ws.enable")}
		},
		MaxFrameSize: func() int { return fw.cfg.Get().Int("rpc.max_frame_size") },
		MaxChannels:  func() int { return fw.cfg.Get().Int("rpc.max_non_persistent_channels") },
	}
	if cfg.Bool("rpc.enable") {
		mux.Handle("/rpc", rpcCh)
		mux.Handle("/rpc/", rpcCh)
	}
	mux.Handle("/", &httpd.Handler{FS: fw.fs, Log: d.log, Settings: func() httpd.Settings {
		c := fw.cfg.Get()
		return httpd.Settings{DocumentRoot: c.String("http.document_root"), IndexFiles: c.String("http.index_files"),
			HiddenFiles: c.String("http.hidden_files"), UploadACL: c.String("http.upload_acl"),
			AuthDomain: c.String("http.auth_domain"), AuthFile: c.String("http.auth_file"),
			AuthAlgo: c.Int("http.auth_algo"), ExtraHeaders: c.String("http.extra_headers")}
	}})
	// HTTP/1 only, as Mongoose: Go's HTTP/2 is reached only through a
	// crypto/tls connection, which the device's TLS is not, and setting it
	// up costs every device of a fleet a few KiB for nothing.
	var http1 http.Protocols
	http1.SetHTTP1(true)
	srv := &http.Server{Handler: d.protectHTTP(logConns(mux, d)), ReadHeaderTimeout: 10 * time.Second, Protocols: &http1,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)} // e.g. refused TLS handshakes
	go srv.Serve(l)
	fw.onStop(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		tcp.Close() // Serve may not have taken it over yet
		srv.Shutdown(ctx)
		srv.Close()
	})
	d.log.Info(fmt.Sprintf("HTTP server started on [%s]%s", cfg.String("http.listen_addr"), ssl), console.Src("mgos_http_server.c", 543))
	return nil
}

func logConns(h http.Handler, d *Device) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.log.Debug(fmt.Sprintf("%p HTTP connection from %s", r, r.RemoteAddr), console.Src("mgos_http_server.c", 131))
		h.ServeHTTP(w, r)
	})
}

// sysDevice is the device as the Sys.* service sees it.
type sysDevice struct {
	d  *Device
	fw *firmware
}

func (s *sysDevice) Info() rpc.SysInfo {
	cfg := s.fw.cfg.Get()
	mac := s.d.mac()
	total, used := s.fw.fs.Usage()
	ramTotal, ramFree, ramMin := s.fw.ram.Stats()
	fwid := s.d.fwIdentity(s.fw)
	return rpc.SysInfo{
		ID: cfg.String("device.id"), App: fwid.Name, FWVersion: fwid.Version,
		FWID: fwid.BuildID, MGVersion: MGVersion, MGID: MGID,
		MAC:  strings.ReplaceAll(macColons(mac), ":", ""),
		Arch: s.d.board.Arch, Uptime: int64(time.Since(s.fw.started).Seconds()),
		PublicKey: cfg.String("device.public_key"),
		RAMSize:   int64(ramTotal), RAMFree: int64(ramFree), RAMMinFree: int64(ramMin),
		FSSize: total, FSFree: total - used, Crashes: s.d.Crashes(),
		WiFi: s.fw.wifiInfo(),
	}
}

func (s *sysDevice) Reboot(delay time.Duration) { s.d.ScheduleReboot(delay) }
func (s *sysDevice) SetDebugLevel(l int)        { s.d.out.SetLevel(l) }

// mqttServer returns the broker the firmware connects to, or "".
func (d *Device) mqttServer(cfg *configs.Config) string {
	if cfg.Bool("mqtt.enable") {
		return cfg.String("mqtt.server")
	}
	return ""
}

// startMQTT connects the device to its broker (mqtt.* config).
func (d *Device) startMQTT(fw *firmware) {
	cfg := fw.cfg.Get()
	server := d.mqttServer(cfg)
	if server == "" {
		return
	}
	var tc func(net.Conn) (net.Conn, error)
	if cfg.String("mqtt.ssl_ca_cert") != "" || cfg.String("mqtt.ssl_cert") != "" {
		host, _, err := net.SplitHostPort(mqtt.ServerAddr(server, true))
		var c *tls12.Config
		if err == nil {
			c, err = devtls.ClientConfig(fw.fs, cfg.String("mqtt.ssl_cert"), cfg.String("mqtt.ssl_key"), cfg.String("mqtt.ssl_ca_cert"), host, fw.tlsOptions(d))
		}
		if err != nil {
			d.log.Error("MQTT0 TLS setup failed: "+err.Error(), console.Src("mgos_mqtt_conn.c", 440))
			return
		}
		tc = devtls.Dialer(c)
	}
	user, pass := cfg.String("mqtt.user"), cfg.String("mqtt.pass")
	var dial func() (net.Conn, error)
	if server == d.opts.MQTTBroker && tc == nil { // the host's embedded broker: an in-process pipe
		dial = d.opts.MQTTDial
	}
	fw.mqtt = mqtt.Start(mqtt.Config{
		TLS: tc, Dial: dial,
		Server: server, ClientID: cfg.String("mqtt.client_id"), User: user, Pass: pass,
		KeepAlive: time.Duration(cfg.Int("mqtt.keep_alive")) * time.Second, CleanSession: cfg.Bool("mqtt.clean_session"),
		WillTopic: cfg.String("mqtt.will_topic"), WillMessage: cfg.String("mqtt.will_message"), WillRetain: cfg.Bool("mqtt.will_retain"),
		ReconnectMin: time.Duration(cfg.Float("mqtt.reconnect_timeout_min") * float64(time.Second)),
		ReconnectMax: time.Duration(cfg.Float("mqtt.reconnect_timeout_max") * float64(time.Second)),
		DeviceID:     cfg.String("device.id"), RPC: cfg.Bool("rpc.enable") && cfg.Bool("rpc.mqtt.enable"),
		RPCQoS: byte(cfg.Int("rpc.mqtt.qos")), RPCHandler: fw.disp, Supervise: d.protect,
		MaxQueue: cfg.Int("rpc.max_queue_length"),
	}, d.log)
	fw.onStop(fw.mqtt.Close)
	if topic := cfg.String("debug.stderr_topic"); topic != "" {
		if !mqtt.ValidSrc(topic) { // publishing there would get the session dropped, again and again
			d.log.Error(fmt.Sprintf("debug.stderr_topic %q is not a valid topic: console over MQTT is off", topic), console.Src("mgos_debug.c", 0))
			return
		}
		fw.onStop(d.mqttLog.start(fw.mqtt, cfg.String("device.id"), topic))
	}
}

// startATCA is mgos_atca_init: with sys.atca.enable it needs the I2C bus
// (without it Mongoose OS's init fails), talks to the chip at
// sys.atca.i2c_addr and, when the chip answers, registers the ATCA.*
// service. A chip that is not on the bus (wired to other pins or another
// address) is logged and the device boots without it.
func (d *Device) startATCA(fw *firmware, bus i2cBus) error {
	cfg := fw.cfg.Get()
	if !cfg.Bool("sys.atca.enable") {
		return nil
	}
	if bus == nil || cfg.Int("sys.atca.i2c_bus") != 0 { // the board has one bus, 0
		d.log.Error("ATCA requires I2C to be enabled (i2c.enable=true)", console.Src("mgos_atca.c", 58))
		d.log.Error("atca init failed", console.Src("mgos_deps_init.c", 0))
		return errors.New("boot: atca init failed; the firmware restarts")
	}
	addr := cfg.Int("sys.atca.i2c_addr")
	if addr >= 0x7F { // given already shifted, as cryptoauthlib wants it
		addr >>= 1
	}
	drv := atcahost.New(bus, byte(addr&0x7F))
	line := atcahost.InitLine(drv, cfg.Int("sys.atca.i2c_bus"), addr&0x7F, cfg.Int("sys.atca.ecdh_slots_mask"))
	if strings.HasPrefix(line, "ATCA:") {
		d.log.Error(fmt.Sprintf("ATCA: Failed to get chip info (%d/0x%x)", cfg.Int("sys.atca.i2c_bus"), addr&0x7F), console.Src("mgos_atca.c", 80))
		d.log.Error(line, console.Src("mgos_atca.c", 117))
		return nil
	}
	d.log.Info(line, console.Src("mgos_atca.c", 96))
	fw.atca = drv
	fw.atcaOffload = devtls.NewATCAOffload(drv, cfg.Int("sys.atca.ecdh_slots_mask"), d.log)
	atcahost.RegisterService(fw.disp, drv)
	return nil
}

// tlsOptions are what the firmware's mbedTLS depends on: the chip (keys
// named ATCA:N, ECDH and ECDSA offload), the RAM, the board's suites.
func (fw *firmware) tlsOptions(d *Device) devtls.Options {
	o := devtls.Options{ATCA: fw.atcaSigner(d), ATCABuilt: fw.cfg.Get().Bool("sys.atca.enable"),
		ESP8266: d.board.Arch == "esp8266", Log: d.log, RAM: fw.ram, Protect: d.protect}
	if fw.atca != nil {
		o.Chip = fw.atcaOffload
	}
	return o
}

// atcaSigner resolves TLS keys named ATCA:N, or nil without a chip.
func (fw *firmware) atcaSigner(d *Device) devtls.SignerFunc {
	if fw.atca == nil {
		return nil
	}
	return func(slot int) (crypto.Signer, error) {
		s, err := atcahost.NewSigner(fw.atca, slot, d.log)
		if err != nil {
			return nil, err
		}
		return supervisedSigner{s: s, d: d}, nil
	}
}
