package tls12

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
)

type testCert struct {
	c    *testkit.Cert
	tls  tls.Certificate
	x509 *x509.Certificate
}

// issue makes a certificate for a fresh P-256 or RSA key, signed by parent
// (self-signed when nil).
func issue(t testing.TB, cn string, parent *testCert, rsaKey bool, isCA bool) *testCert {
	t.Helper()
	var key crypto.Signer // nil: P-256
	if rsaKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	var p *testkit.Cert
	if parent != nil {
		p = parent.c
	}
	c := testkit.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement}, key, p)
	return &testCert{c: c, tls: c.TLS(), x509: c.X509}
}

// pair runs a client and a server over a loopback TCP connection and
// echoes one message through them.
func pair(t *testing.T, client func(net.Conn) net.Conn, server func(net.Conn) net.Conn) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		s := server(c)
		defer s.Close()
		buf := make([]byte, 64<<10)
		n, err := io.ReadFull(s, buf[:20000])
		if err != nil {
			srvErr <- err
			return
		}
		_, err = s.Write(buf[:n])
		srvErr <- err
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := client(raw)
	defer c.Close()
	msg := bytes.Repeat([]byte("mosemu!"), 20000/7+1)[:20000]
	if _, err := c.Write(msg); err != nil {
		return errors.Join(err, <-srvErr)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return errors.Join(err, <-srvErr)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs")
	}
	return <-srvErr
}

func TestInteropWithCryptoTLS(t *testing.T) {
	ca := issue(t, "CA", nil, false, true)
	ecSrv := issue(t, "device.local", ca, false, false)
	rsaSrv := issue(t, "device.local", ca, true, false)
	cli := issue(t, "client", ca, false, false)
	pool := x509.NewCertPool()
	pool.AddCert(ca.x509)
	for _, tc := range []struct {
		suite uint16
		cert  *testCert
	}{
		{ECDHE_ECDSA_AES128_GCM_SHA256, ecSrv},
		{ECDHE_ECDSA_AES128_CBC_SHA256, ecSrv},
		{ECDHE_RSA_AES128_GCM_SHA256, rsaSrv},
		{ECDHE_RSA_AES128_CBC_SHA256, rsaSrv},
		{RSA_AES128_GCM_SHA256, rsaSrv},
		{RSA_AES128_CBC_SHA256, rsaSrv},
		{RSA_AES128_CBC_SHA, rsaSrv},
	} {
		for _, mtls := range []bool{false, true} {
			name := SuiteName(tc.suite)
			if mtls {
				name += "/mTLS"
			}
			t.Run(name+"/our server", func(t *testing.T) {
				cfg := &Config{Certificate: &tc.cert.tls}
				if mtls {
					cfg.ClientCAs, cfg.ClientCAsDN = pool, [][]byte{ca.x509.RawSubject}
				}
				var st ConnectionState
				err := pair(t, func(c net.Conn) net.Conn {
					gc := &tls.Config{RootCAs: pool, ServerName: "device.local", MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tc.suite}}
					if mtls {
						gc.Certificates = []tls.Certificate{cli.tls}
					}
					return tls.Client(c, gc)
				}, func(c net.Conn) net.Conn {
					s := Server(c, cfg)
					if err := s.Handshake(); err != nil {
						return s
					}
					st = s.ConnectionState()
					return s
				})
				if err != nil {
					t.Fatal(err)
				}
				if st.CipherSuite != tc.suite || (mtls && len(st.PeerCertificates) != 1) {
					t.Errorf("state %+v", st)
				}
			})
			t.Run(name+"/our client", func(t *testing.T) {
				cfg := &Config{ServerName: "device.local", RootCAs: pool, Suites: []uint16{tc.suite}}
				if mtls {
					cfg.Certificate = &cli.tls
				}
				err := pair(t, func(c net.Conn) net.Conn { return Client(c, cfg) }, func(c net.Conn) net.Conn {
					gc := &tls.Config{Certificates: []tls.Certificate{tc.cert.tls}, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tc.suite}}
					if mtls {
						gc.ClientCAs, gc.ClientAuth = pool, tls.RequireAndVerifyClientCert
					}
					return tls.Server(c, gc)
				})
				if err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestOwnSuites: the suites crypto/tls lacks (static ECDH), between our
// client and our server, with every curve.
func TestOwnSuites(t *testing.T) {
	ca := issue(t, "CA", nil, false, true)
	ecSrv := issue(t, "device.local", ca, false, false)
	rsaSrv := issue(t, "device.local", ca, true, false)
	rsaCA := issue(t, "RSA CA", nil, true, true)
	ecByRSA := issue(t, "device.local", rsaCA, false, false)
	for _, tc := range []struct {
		suite  uint16
		cert   *testCert
		curves []CurveID
	}{
		{ECDH_ECDSA_AES128_GCM_SHA256, ecSrv, nil},
		{ECDH_ECDSA_AES128_CBC_SHA256, ecSrv, nil},
		{ECDH_ECDSA_AES128_CBC_SHA, ecSrv, nil},
		{ECDH_RSA_AES128_GCM_SHA256, ecByRSA, nil},
		{ECDH_RSA_AES128_CBC_SHA256, ecByRSA, nil},
		{ECDH_RSA_AES128_CBC_SHA, ecByRSA, nil},
		{ECDHE_RSA_AES128_GCM_SHA256, rsaSrv, []CurveID{P384}},
		{ECDHE_RSA_AES128_CBC_SHA256, rsaSrv, []CurveID{P521}},
	} {
		t.Run(SuiteName(tc.suite), func(t *testing.T) {
			var st ConnectionState
			err := pair(t, func(c net.Conn) net.Conn {
				return Client(c, &Config{Suites: []uint16{tc.suite}, Curves: tc.curves, NoEncryptThenMAC: true})
			}, func(c net.Conn) net.Conn {
				s := Server(c, &Config{Certificate: &tc.cert.tls})
				if s.Handshake() == nil {
					st = s.ConnectionState()
				}
				return s
			})
			if err != nil {
				t.Fatal(err)
			}
			if st.CipherSuite != tc.suite || (tc.curves != nil && st.Curve != tc.curves[0]) {
				t.Errorf("state %+v", st)
			}
		})
	}
}

// TestServerChoice: the server's order decides, X25519 is not a curve of
// mbedTLS 2.16, TLS 1.3-only and foreign suites get handshake_failure.
func TestServerChoice(t *testing.T) {
	ecSrv := issue(t, "device.local", nil, false, false)
	dial := func(gc *tls.Config) (tls.ConnectionState, error) {
		gc.InsecureSkipVerify = true
		var cs tls.ConnectionState
		err := pair(t, func(c net.Conn) net.Conn {
			tc := tls.Client(c, gc)
			if err := tc.Handshake(); err == nil {
				cs = tc.ConnectionState()
			}
			return tc
		}, func(c net.Conn) net.Conn { return Server(c, &Config{Certificate: &ecSrv.tls}) })
		return cs, err
	}
	cs, err := dial(&tls.Config{})
	if err != nil || cs.Version != tls.VersionTLS12 || cs.CipherSuite != ECDHE_ECDSA_AES128_GCM_SHA256 || cs.CurveID != tls.CurveP256 {
		t.Errorf("default client: %v %x %v", err, cs.CipherSuite, cs.CurveID)
	}
	if _, err := dial(&tls.Config{CurvePreferences: []tls.CurveID{tls.X25519}}); err == nil {
		t.Error("X25519 only: connected")
	}
	if _, err := dial(&tls.Config{MinVersion: tls.VersionTLS13}); err == nil {
		t.Error("TLS 1.3 only: connected")
	}
	if _, err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}); err == nil {
		t.Error("ChaCha20 only: connected")
	}
}

// TestEncryptThenMACBug: with a CBC suite and encrypt-then-MAC, the fork
// sends garbage MACs, so its own client and server cannot finish a
// handshake; DHE suites are not compiled, so a DHE-only peer gets
// handshake_failure.
func TestEncryptThenMACBug(t *testing.T) {
	ecSrv := issue(t, "device.local", nil, false, false)
	rsaSrv := issue(t, "device.local", nil, true, false)
	for _, tc := range []struct {
		suite uint16
		cert  *testCert
		alert uint8
	}{
		{ECDHE_ECDSA_AES128_CBC_SHA256, ecSrv, alertBadRecordMAC},
		{RSA_AES128_CBC_SHA, rsaSrv, alertBadRecordMAC},
		{DHE_RSA_AES128_GCM_SHA256, rsaSrv, alertHandshakeFailure},
	} {
		err := pair(t, func(c net.Conn) net.Conn {
			return Client(c, &Config{Suites: []uint16{tc.suite, ECDHE_ECDSA_AES128_CBC_SHA256}[:1]})
		}, func(c net.Conn) net.Conn { return Server(c, &Config{Certificate: &tc.cert.tls}) })
		var a *AlertError
		if !errors.As(err, &a) || a.Desc != tc.alert {
			t.Errorf("%s: %v, want alert %d", SuiteName(tc.suite), err, tc.alert)
		}
	}
}

// BenchmarkServerHandshake is a full ECDHE-ECDSA handshake of a crypto/tls
// client with our server; BenchmarkServerHandshakeCryptoTLS, the baseline,
// is the same with a crypto/tls server.
func BenchmarkServerHandshake(b *testing.B) { benchServer(b, false) }

// BenchmarkServerHandshakeCryptoTLS is the crypto/tls baseline.
func BenchmarkServerHandshakeCryptoTLS(b *testing.B) { benchServer(b, true) }

func benchServer(b *testing.B, cryptoTLS bool) {
	cert := issue(b, "device.local", nil, false, false)
	for b.Loop() {
		c1, c2 := net.Pipe()
		if cryptoTLS {
			go tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{cert.tls}, MaxVersion: tls.VersionTLS12}).Handshake()
		} else {
			go Server(c1, &Config{Certificate: &cert.tls}).Handshake()
		}
		if err := tls.Client(c2, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}).Handshake(); err != nil {
			b.Fatal(err)
		}
		c1.Close()
		c2.Close()
	}
}

// TestMbedTLSErrorLines: a failed handshake prints the port's
// "mbedTLS error: -0x...." line with mbedTLS's code.
func TestMbedTLSErrorLines(t *testing.T) {
	ca := issue(t, "CA", nil, false, true)
	srv := issue(t, "device.local", ca, false, false)
	stranger := issue(t, "intruder", issue(t, "Other CA", nil, false, true), false, false)
	pool := x509.NewCertPool()
	pool.AddCert(ca.x509)
	for _, tc := range []struct {
		name   string
		client *tls.Config
		mtls   bool
		want   string
	}{
		{"no common suite", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, false, "-0x7380"},
		{"TLS 1.3 only", &tls.Config{MinVersion: tls.VersionTLS13}, false, "-0x7380"},
		{"no client certificate", &tls.Config{}, true, "-0x7480"},
		{"untrusted client certificate", &tls.Config{Certificates: []tls.Certificate{stranger.tls}}, true, "-0x2700"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lb testkit.SyncBuffer
			log := slog.New(slog.NewTextHandler(&lb, nil))
			cfg := &Config{Certificate: &srv.tls, Log: log}
			if tc.mtls {
				cfg.ClientCAs = pool
			}
			c1, c2 := net.Pipe()
			done := make(chan struct{})
			go func() { Server(c1, cfg).Handshake(); close(done) }()
			tc.client.InsecureSkipVerify = true
			tls.Client(c2, tc.client).Handshake()
			c2.Close()
			<-done
			if !strings.Contains(lb.String(), "mbedTLS error: "+tc.want) {
				t.Errorf("want %s in %q", tc.want, lb.String())
			}
		})
	}
}
