package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	atcahost "github.com/mosemu/mosemu/atca/host"
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/i2c"
	"github.com/mosemu/mosemu/emu/snapshot"
	"github.com/mosemu/mosemu/labui"
	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
	"github.com/spf13/afero"
)

// StartSnapshot is the snapshot `lab start` leaves, so that
// `mosemu run --reset-to start` puts a seat back at the beginning.
const StartSnapshot = "start"

// Start builds the lab's starting device in dir, which must hold no device
// yet (unless force, which replaces it), and saves it as the snapshot
// "start".
func (l *Lab) Start(ctx context.Context, dir string, force bool) error {
	if _, err := os.Stat(filepath.Join(dir, emu.StateFile)); err == nil {
		if !force {
			return fmt.Errorf("%s already holds a device: use another --state or --force", dir)
		}
		if busy, _ := snapshot.Running(dir); busy {
			return fmt.Errorf("%s: %w", dir, snapshot.ErrRunning)
		}
		for _, f := range []string{emu.StateFile, emu.FlashFile, emu.EfuseFile, emu.ATCAFile} {
			if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	d, err := emu.New(emu.Options{StateDir: dir, Arch: l.Device.Arch, Seed: l.Device.Seed, HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Start(ctx); err != nil {
		return err
	}
	fsys := d.FS()
	for name, content := range l.Device.Files {
		if err := afero.WriteFile(fsys, name, []byte(content), 0o644); err != nil {
			return fmt.Errorf("lab file %s: %w", name, err)
		}
	}
	if l.Device.PKI {
		if err := writePKI(fsys, d.Identity().Arch); err != nil {
			return err
		}
	}
	if len(l.Device.Config) > 0 {
		b, err := json.MarshalIndent(l.Device.Config, "", "  ")
		if err != nil {
			return fmt.Errorf("device.config: %w", err)
		}
		if err := afero.WriteFile(fsys, "conf9.json", b, 0o644); err != nil {
			return err
		}
	}
	if l.Device.ATCA != nil {
		if err := l.provisionATCA(d); err != nil {
			return fmt.Errorf("device.atca: %w", err)
		}
	}
	if ef := d.Efuses(); ef != nil {
		for name, v := range l.Device.Efuses {
			if err := ef.Burn(name, v); err != nil {
				return fmt.Errorf("device.efuses.%s: %w", name, err)
			}
		}
		if err := ef.Save(filepath.Join(dir, emu.EfuseFile)); err != nil {
			return err
		}
	} else if len(l.Device.Efuses) > 0 {
		return errors.New("device.efuses: this board has no efuses")
	}
	if err := d.Close(); err != nil {
		return err
	}
	_, err = snapshot.Store{StateDir: dir}.Save(StartSnapshot)
	return err
}

// provisionATCA sets up the ATECC608A as a host would over I2C: the
// configuration zone, the locks, fresh keys.
func (l *Lab) provisionATCA(d *emu.Device) error {
	a := l.Device.ATCA
	if d.ATCA() == nil {
		return errors.New("the board has no ATECC608A wired")
	}
	bus := i2c.NewBus()
	const addr = 0x60
	bus.Attach(addr, d.ATCA())
	drv := atcahost.New(bus, addr)
	if a.Config != "" {
		p := a.Config
		if !filepath.IsAbs(p) {
			p = filepath.Join(l.dir, p)
		}
		text, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		cfg, err := atcahost.ParseMosYAML(text)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Config, err)
		}
		if err := drv.WriteConfig(cfg); err != nil {
			return fmt.Errorf("writing the config zone: %w", err)
		}
	}
	if a.LockConfig {
		if err := drv.LockZone(0); err != nil {
			return fmt.Errorf("locking the config zone: %w", err)
		}
	}
	if a.LockData {
		if err := drv.LockZone(1); err != nil {
			return fmt.Errorf("locking the data zone: %w", err)
		}
	}
	for _, s := range a.GenKey {
		if _, err := drv.GenKey(s); err != nil {
			return fmt.Errorf("GenKey slot %d: %w", s, err)
		}
	}
	return nil
}

// writePKI writes a CA, a server certificate for the device and a client
// certificate, all P-256.
func writePKI(fsys afero.Fs, cn string) error {
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mosemu lab CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, name string, usage x509.ExtKeyUsage) ([]byte, []byte, error) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		t := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0), ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", kb), nil
	}
	cert, key, err := issue(2, cn, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	ccert, ckey, err := issue(3, "student", x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{"ca.pem": pemBlock("CERTIFICATE", caDER), "cert.pem": cert, "key.pem": key, "client.pem": ccert, "client.key.pem": ckey} {
		if err := afero.WriteFile(fsys, name, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Result is the outcome of one goal.
type Result struct {
	Name     string `json:"name"`
	Passed   bool   `json:"passed"`
	Evidence string `json:"evidence"`
}

// Report is the outcome of every goal.
type Report struct {
	Lab    string   `json:"lab"`
	Goals  []Result `json:"goals"`
	Passed bool     `json:"passed"`
}

// CheckOptions adjust how the device copy is run for a check.
type CheckOptions struct {
	// MbedTLSDynamicBuffers runs the copy with dynamic mbedTLS buffers
	// (as mosemu run --mbedtls-dynamic-buffers), on top of the lab's flag.
	MbedTLSDynamicBuffers bool
}

// Check grades the device of dir. It boots a copy of the state (so a
// running device is not disturbed) and checks every goal against it.
func (l *Lab) Check(ctx context.Context, dir string) (*Report, error) {
	return l.CheckWith(ctx, dir, CheckOptions{})
}

// CheckWith is Check with options.
func (l *Lab) CheckWith(ctx context.Context, dir string, o CheckOptions) (*Report, error) {
	if _, err := os.Stat(filepath.Join(dir, emu.StateFile)); err != nil {
		return nil, fmt.Errorf("%s holds no device: run mosemu lab start first (%w)", dir, err)
	}
	tmp, err := os.MkdirTemp("", "mosemu-lab-check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := snapshot.CopyState(dir, tmp); err != nil {
		return nil, err
	}
	d, err := emu.New(emu.Options{StateDir: tmp, HTTPAddr: "127.0.0.1:0",
		TLSDynamicBuffers: l.Device.MbedTLSDynamicBuffers || o.MbedTLSDynamicBuffers})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	bootErr := d.Start(ctx)
	r := &Report{Lab: l.Title, Passed: true}
	for _, g := range l.Goals {
		var res Result
		if bootErr != nil && g.Efuse == nil && g.Flash == nil {
			res = Result{Evidence: "the device does not boot: " + bootErr.Error()}
		} else {
			res = check(ctx, d, g)
		}
		res.Name = g.Name
		r.Goals = append(r.Goals, res)
		r.Passed = r.Passed && res.Passed
	}
	return r, nil
}

func check(ctx context.Context, d *emu.Device, g Goal) Result {
	switch {
	case g.RPC != nil:
		return checkRPC(ctx, d, g.RPC)
	case g.Flash != nil:
		return checkFlash(d, g.Flash)
	case g.Efuse != nil:
		return checkEfuse(d, g.Efuse)
	case g.Config != nil:
		return checkConfig(d, g.Config)
	case g.File != nil:
		return checkFile(d, g.File)
	case g.TLS != nil:
		return checkTLS(d, g.TLS)
	case g.RAM != nil:
		return checkRAM(d, g.RAM)
	}
	return Result{Evidence: "no check"}
}

func configValue(d *emu.Device, key string) string {
	levels, _ := d.ConfigLevels()
	if levels == nil {
		return ""
	}
	v, ok := levels[len(levels)-1].Value(key)
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

func serverTLS(d *emu.Device) bool { return configValue(d, "http.ssl_cert") != "" }

func checkRPC(ctx context.Context, d *emu.Device, g *RPCGoal) Result {
	ch := g.Channel
	if ch == "" {
		ch = "ws"
	}
	scheme := ch
	var opts []client.Option
	if serverTLS(d) {
		scheme += "s"
		opts = append(opts, client.WithTLS(&tls.Config{InsecureSkipVerify: true}))
	}
	if g.User != "" {
		opts = append(opts, client.WithCredentials(g.User, g.Pass))
	}
	url := scheme + "://" + d.HTTPAddr() + "/rpc"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	who := "anonymously"
	if g.User != "" {
		who = "as " + g.User
	}
	got := "ok"
	c, err := client.Dial(ctx, url, opts...)
	if err == nil {
		var params any
		if g.Params != nil {
			params = g.Params
		}
		_, err = c.Call(ctx, g.Method, params)
		c.Close()
	}
	var re *rpc.Error
	switch {
	case err == nil:
	case errors.As(err, &re):
		got = strconv.Itoa(re.Code)
	default:
		return Result{Evidence: fmt.Sprintf("%s over %s %s: %v", g.Method, ch, who, err)}
	}
	pass := got == g.Expect || (g.Expect == "refused" && (got == "401" || got == "403"))
	return Result{Passed: pass, Evidence: fmt.Sprintf("%s over %s %s: %s (want %s)", g.Method, ch, who, got, g.Expect)}
}

func checkFlash(d *emu.Device, g *FlashGoal) Result {
	start, n := g.Start, g.Length
	if g.Partition != "" {
		found := false
		for _, p := range labui.Inspect("", d).Flash.Partitions {
			if p.Label == g.Partition {
				start, n, found = int64(p.Offset), int64(p.Size), true
			}
		}
		if !found {
			return Result{Evidence: "no partition " + g.Partition}
		}
	}
	buf := make([]byte, flash.SectorSize)
	var found []string
	plain, cipher := 0, 0
	for off := start &^ (flash.SectorSize - 1); off < start+n; off += flash.SectorSize {
		if _, err := d.Flash().ReadAt(buf, off); err != nil {
			return Result{Evidence: err.Error()}
		}
		class, secrets := labui.ClassifySector(buf)
		switch class {
		case 'p':
			plain++
		case 'c':
			cipher++
		}
		for _, s := range secrets {
			if s.Public {
				continue
			}
			if len(found) < 5 {
				found = append(found, fmt.Sprintf("%s at %#x", s.Kind, off+s.Offset))
			}
		}
	}
	where := fmt.Sprintf("flash %#x+%#x (%d plaintext, %d ciphertext sectors)", start, n, plain, cipher)
	if len(found) > 0 {
		return Result{Evidence: where + ": plaintext " + strings.Join(found, "; ")}
	}
	return Result{Passed: true, Evidence: where + ": no plaintext secret"}
}

func checkEfuse(d *emu.Device, g *EfuseGoal) Result {
	ef := d.Efuses()
	if ef == nil {
		return Result{Evidence: "this board has no efuses"}
	}
	v, err := ef.Value(g.Field)
	if err != nil {
		return Result{Evidence: err.Error()}
	}
	if g.Equals != nil {
		return Result{Passed: v == *g.Equals, Evidence: fmt.Sprintf("%s = %#x (want %#x)", g.Field, v, *g.Equals)}
	}
	ones := 0
	for x := v; x != 0; x &= x - 1 {
		ones++
	}
	return Result{Passed: ones%2 == 1, Evidence: fmt.Sprintf("%s = %#x (%d bits set, want an odd number)", g.Field, v, ones)}
}

func checkConfig(d *emu.Device, g *ConfigGoal) Result {
	v := configValue(d, g.Key)
	return Result{Passed: v == g.Equals, Evidence: fmt.Sprintf("%s = %q (want %q)", g.Key, v, g.Equals)}
}

func checkFile(d *emu.Device, g *FileGoal) Result {
	_, err := d.FS().Stat(g.Path)
	exists := err == nil
	if g.Absent {
		return Result{Passed: !exists, Evidence: fmt.Sprintf("%s %s (want absent)", g.Path, map[bool]string{true: "exists", false: "absent"}[exists])}
	}
	return Result{Passed: exists, Evidence: fmt.Sprintf("%s %s (want present)", g.Path, map[bool]string{true: "exists", false: "absent"}[exists])}
}

func clientCert(d *emu.Device) (tls.Certificate, error) {
	cert, err := afero.ReadFile(d.FS(), "client.pem")
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := afero.ReadFile(d.FS(), "client.key.pem")
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(cert, key)
}

func dialTLS(d *emu.Device, certs []tls.Certificate) (*tls.Conn, error) {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(dialer, "tcp", d.HTTPAddr(), &tls.Config{InsecureSkipVerify: true, Certificates: certs})
	if err != nil {
		return nil, err
	}
	// TLS 1.3 reports a refused client certificate after the handshake:
	// make a round trip to see it.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET /rpc/RPC.Ping HTTP/1.0\r\n\r\n")); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func checkTLS(d *emu.Device, g *TLSGoal) Result {
	if !serverTLS(d) {
		return Result{Evidence: "the device's HTTP server does not speak TLS (http.ssl_cert is empty)"}
	}
	var ev []string
	pass := true
	anon, err := dialTLS(d, nil)
	if g.RequireClientCert {
		if err == nil {
			anon.Close()
			return Result{Evidence: "a client without a certificate completed the TLS handshake and was served"}
		}
		ev = append(ev, "refused without a client certificate ("+shortErr(err)+")")
		cc, cerr := clientCert(d)
		if cerr != nil {
			return Result{Evidence: strings.Join(ev, "; ") + "; no client.pem/client.key.pem to try with: " + cerr.Error()}
		}
		c, err := dialTLS(d, []tls.Certificate{cc})
		if err != nil {
			return Result{Evidence: strings.Join(ev, "; ") + "; refused with client.pem too: " + shortErr(err)}
		}
		anon = c
		ev = append(ev, "served with client.pem")
	} else if err != nil {
		return Result{Evidence: "TLS handshake failed: " + shortErr(err)}
	}
	defer anon.Close()
	if g.KeySlot != nil {
		pub, ok := anon.ConnectionState().PeerCertificates[0].PublicKey.(*ecdsa.PublicKey)
		want, werr := atcaPub(d, *g.KeySlot)
		switch {
		case werr != nil:
			pass = false
			ev = append(ev, fmt.Sprintf("ATCA slot %d: %v", *g.KeySlot, werr))
		case !ok || !pub.Equal(want):
			pass = false
			ev = append(ev, fmt.Sprintf("the server key is not the ATECC608A's slot %d key (http.ssl_key=%s)", *g.KeySlot, configValue(d, "http.ssl_key")))
		default:
			ev = append(ev, fmt.Sprintf("the handshake was signed with the ATECC608A's slot %d key", *g.KeySlot))
		}
	} else if len(ev) == 0 {
		ev = append(ev, "handshake completed")
	}
	return Result{Passed: pass, Evidence: strings.Join(ev, "; ")}
}

// atcaPub asks the device for the public key of an ATECC608A slot.
func atcaPub(d *emu.Device, slot int) (*ecdsa.PublicKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, _ := clientCert(d)
	tc := &tls.Config{InsecureSkipVerify: true}
	if cc.Certificate != nil {
		tc.Certificates = []tls.Certificate{cc}
	}
	c, err := client.Dial(ctx, "wss://"+d.HTTPAddr()+"/rpc", client.WithTLS(tc))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res, err := c.Call(ctx, "ATCA.GetPubKey", map[string]any{"slot": slot})
	if err != nil {
		return nil, err
	}
	var pk struct{ Pubkey []byte }
	if err := json.Unmarshal(res, &pk); err != nil || len(pk.Pubkey) != 64 {
		return nil, fmt.Errorf("bad ATCA.GetPubKey answer %s", res)
	}
	x, y := new(big.Int).SetBytes(pk.Pubkey[:32]), new(big.Int).SetBytes(pk.Pubkey[32:])
	return &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}, nil
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

func checkRAM(d *emu.Device, g *RAMGoal) Result {
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	useTLS := g.TLS && serverTLS(d)
	var certs []tls.Certificate
	if cc, err := clientCert(d); err == nil {
		certs = []tls.Certificate{cc}
	}
	accepted := 0
	for i := 0; i < g.Connections; i++ {
		var c net.Conn
		var err error
		if useTLS { // a handshake, then idle: what a flood of clients does
			var tc *tls.Conn
			tc, err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", d.HTTPAddr(), &tls.Config{InsecureSkipVerify: true, Certificates: certs})
			if err == nil {
				c = tc
			}
		} else {
			c, err = net.DialTimeout("tcp", d.HTTPAddr(), 5*time.Second)
			if err == nil {
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, rerr := c.Read(make([]byte, 1)); rerr != nil && !isTimeout(rerr) {
					c.Close()
					err = rerr
				}
			}
		}
		if err == nil {
			conns = append(conns, c)
			accepted++
		}
	}
	time.Sleep(100 * time.Millisecond)
	_, free, _ := d.RAM()
	kind := "TCP"
	if useTLS {
		kind = "TLS"
	}
	return Result{Passed: free >= g.MinFree, Evidence: fmt.Sprintf("%d bytes free with %d of %d %s connections open (want at least %d)",
		free, accepted, g.Connections, kind, g.MinFree)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
