package devtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/atca"
	atcahost "github.com/mosemu/mosemu/atca/host"
	"github.com/mosemu/mosemu/emu/i2c"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/tls/tls12"
	"github.com/spf13/afero"
)

// chipWithKey returns a driver for a locked chip with an ECC key in slot 0
// (external signing) and slots 2 and 3 set up for ECDH, as the Mongoose
// OS ATECC608A guide configures them.
func chipWithKey(t testing.TB) (*atcahost.Driver, *ecdsa.PrivateKey) {
	d, keys := chipWithKeys(t, map[int]uint16{0: 0x81})
	return d, keys[0]
}

// chipWithKeys is chipWithKey with ECC keys in the slots of keySlots, each
// with its SlotConfig.
func chipWithKeys(t testing.TB, keySlots map[int]uint16) (*atcahost.Driver, map[int]*ecdsa.PrivateKey) {
	bus := i2c.NewBus()
	bus.Attach(0x60, atca.NewBlank(7))
	d := atcahost.New(bus, 0x60)
	cfg, err := d.ReadConfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range []int{2, 3} {
		binary.LittleEndian.PutUint16(cfg[20+2*slot:], 0x2087) // ext sign + ECDH, GenKey allowed
		binary.LittleEndian.PutUint16(cfg[96+2*slot:], 0x0033) // a P-256 private key
	}
	for slot, sc := range keySlots {
		binary.LittleEndian.PutUint16(cfg[20+2*slot:], sc)
	}
	if err := d.WriteConfig(cfg); err != nil || d.LockZone(0) != nil {
		t.Fatal("config", err)
	}
	keys := map[int]*ecdsa.PrivateKey{}
	for slot := range keySlots {
		keys[slot], _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err := d.PrivWrite(slot, keys[slot].D.FillBytes(make([]byte, 32)), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.LockZone(1); err != nil {
		t.Fatal(err)
	}
	return d, keys
}

func atcaServer(t testing.TB, d *atcahost.Driver, k *ecdsa.PrivateKey, keyName string, log *slog.Logger, caFile string, fs afero.Fs) Options {
	c := testkit.Issue(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dev"}}, k, nil)
	afero.WriteFile(fs, "cert.pem", c.CertPEM(), 0o644)
	afero.WriteFile(fs, "key.pem", c.KeyPEM(), 0o644)
	return Options{Log: log, ATCABuilt: true, Chip: NewATCAOffload(d, 0x0C, log),
		ATCA: func(slot int) (crypto.Signer, error) { return atcahost.NewSigner(d, slot, log) }}
}

// TestATCAKeyECDHEOnTheChip: with http.ssl_key=ATCA:0 the chip signs the
// ServerKeyExchange and does the ECDHE: in TempKey for one connection, in
// an ECDH slot for a second one while the first holds TempKey; client
// certificates are verified by the chip.
func TestATCAKeyECDHEOnTheChip(t *testing.T) {
	d, k := chipWithKey(t)
	var lb testkit.SyncBuffer
	log := slog.New(slog.NewTextHandler(&lb, nil))
	fs := afero.NewMemMapFs()
	o := atcaServer(t, d, k, "ATCA:0", log, "", fs)
	cfg, err := ServerConfig(fs, "cert.pem", "ATCA:0", "", o)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	tl := NewListener(l, cfg)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 10)
				n, err := c.Read(b)
				if err != nil {
					return
				}
				c.Write(b[:n])
			}()
		}
	}()
	dial := func() *tls.Conn {
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := dial()
	c.Write([]byte("hi"))
	b := make([]byte, 2)
	if n, err := io.ReadFull(c, b); n != 2 || string(b) != "hi" || c.ConnectionState().CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
		t.Fatalf("echo %q %v\n%s", b, err, lb.String())
	}
	c.Close()
	out := lb.String()
	for _, want := range []string{"ATCA:16 ECDH gen pubkey ok", "ATCA:0 ECDSA sign ok", "ATCA:16 ECDH ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "ATCA:16 ECDH gen pubkey ok"), strings.Index(out, "ATCA:0 ECDSA sign ok"); i > j {
		t.Errorf("sign before ECDHE:\n%s", out)
	}

	// A handshake that holds TempKey (the client stops after ServerHello
	// Done) sends the next one to a slot of ecdh_slots_mask.
	hold, _ := net.Dial("tcp", l.Addr().String())
	defer hold.Close()
	stop := make(chan struct{})
	defer close(stop)
	go tls12.Client(hold, &tls12.Config{VerifyPeerCertificate: func([][]byte) ([]*x509.Certificate, error) { <-stop; return nil, nil }}).Handshake()
	waitLog(t, &lb, 2, "ATCA:16 ECDH gen pubkey ok")
	c = dial()
	c.Close()
	// The slot never had a key: get fails with an execution error, then the
	// fork generates one.
	if !regexp.MustCompile(`ATCA:([23]) failed to get ECDH pubkey: 0xf4(.|\n)*ATCA:([23]) ECDH gen pubkey ok(.|\n)*ATCA:([23]) ECDH ok`).MatchString(lb.String()) ||
		strings.Contains(lb.String(), "SW ECDH") {
		t.Errorf("no slot ECDH:\n%s", lb.String())
	}
	hold.Close()
}

func waitLog(t *testing.T, lb *testkit.SyncBuffer, n int, s string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if strings.Count(lb.String(), s) >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %d× %q in\n%s", n, s, lb.String())
}

func handshakeBench(b *testing.B, signer bool) {
	d, k := chipWithKey(b)
	fs := afero.NewMemMapFs()
	o := atcaServer(b, d, k, "", slog.New(slog.DiscardHandler), "", fs)
	keyName := "key.pem"
	if signer {
		keyName = "ATCA:0"
	} else {
		o.Chip, o.ATCABuilt = nil, false
	}
	cfg, err := ServerConfig(fs, "cert.pem", keyName, "", o)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c1, c2 := net.Pipe()
		go NewListener(nil, cfg).(*tlsListener).serve(c1)
		if err := tls.Client(c2, &tls.Config{InsecureSkipVerify: true}).Handshake(); err != nil {
			b.Fatal(err)
		}
		c1.Close()
		c2.Close()
	}
}

// BenchmarkHandshakeSoftwareKey is a TLS handshake signed with a key file.
func BenchmarkHandshakeSoftwareKey(b *testing.B) { handshakeBench(b, false) }

// BenchmarkHandshakeATCAKey is the same handshake with the chip signing
// (ATCA:0) and doing the ECDHE.
func BenchmarkHandshakeATCAKey(b *testing.B) { handshakeBench(b, true) }

// TestStaticECDHUsesSlot0: with a static-ECDH suite and an ATCA:N key the
// fork computes the premaster secret with slot 0 whatever N is
// (mbedtls_ecdh_get_params_pk: "ctx->atca_slot = 0; // TODO"): ATCA:0
// works, ATCA:1 fails the handshake although slot 1 holds the
// certificate's key.
func TestStaticECDHUsesSlot0(t *testing.T) {
	d, keys := chipWithKeys(t, map[int]uint16{0: 0x87, 1: 0x87}) // ECC, signing and ECDH
	for _, tc := range []struct {
		slot int
		ok   bool
	}{{0, true}, {1, false}} {
		var lb testkit.SyncBuffer
		log := slog.New(slog.NewTextHandler(&lb, nil))
		fs := afero.NewMemMapFs()
		o := atcaServer(t, d, keys[tc.slot], "", log, "", fs)
		cfg, err := ServerConfig(fs, "cert.pem", fmt.Sprintf("ATCA:%d", tc.slot), "", o)
		if err != nil {
			t.Fatal(err)
		}
		c1, c2 := net.Pipe()
		go NewListener(nil, cfg).(*tlsListener).serve(c1)
		cl := tls12.Client(c2, &tls12.Config{Suites: []uint16{tls12.ECDH_ECDSA_AES128_GCM_SHA256}})
		err = cl.Handshake()
		c1.Close()
		if (err == nil) != tc.ok || !strings.Contains(lb.String(), "ATCA:0 ECDH ok") {
			t.Errorf("ATCA:%d: %v\n%s", tc.slot, err, lb.String())
		}
	}
}

// TestSoftwareECDHWithTheChip: the chip does P-256 only; a client that
// offers P-521 alone gets its ECDHE in software, logged as ecdh.c does.
// (An ATCA key skips the certificate-curve check, as in the fork.)
func TestSoftwareECDHWithTheChip(t *testing.T) {
	d, k := chipWithKey(t)
	var lb testkit.SyncBuffer
	log := slog.New(slog.NewTextHandler(&lb, nil))
	fs := afero.NewMemMapFs()
	cfg, err := ServerConfig(fs, "cert.pem", "ATCA:0", "", atcaServer(t, d, k, "", log, "", fs))
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	go NewListener(nil, cfg).(*tlsListener).serve(c1)
	cl := tls12.Client(c2, &tls12.Config{Curves: []tls12.CurveID{tls12.P521}})
	if err := cl.Handshake(); err != nil || cl.ConnectionState().Curve != tls12.P521 {
		t.Fatalf("%v %+v", err, cl.ConnectionState())
	}
	if out := lb.String(); !strings.Contains(out, "SW ECDH curve 5") || !strings.Contains(out, "ATCA:0 ECDSA sign ok") || strings.Contains(out, "ATCA:16") {
		t.Errorf("log:\n%s", out)
	}
}
