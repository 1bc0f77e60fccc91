package emu

import (
	"crypto/tls"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
)

// tlsDevice serves HTTPS with an EC certificate, logging to log.
func tlsDevice(t *testing.T, log *testkit.SyncBuffer) *Device {
	t.Helper()
	d := startWith(t, Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 14, Console: log})
	ca := issue(t, "Workshop CA", nil, true)
	srv := issue(t, "device", ca, false)
	configureTLS(t, d, "http", map[string]string{"cert.pem": srv.pem, "key.pem": srv.kpem},
		map[string]any{"listen_addr": "443", "ssl_cert": "cert.pem", "ssl_key": "key.pem"})
	return d
}

func handshake(d *Device, c *tls.Config) (tls.ConnectionState, error) {
	c.InsecureSkipVerify = true
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", d.HTTPAddr(), c)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

// TestTLSAsMbedTLS: TLS 1.2 at most, the port's cipher suites and curves.
func TestTLSAsMbedTLS(t *testing.T) {
	d := tlsDevice(t, &testkit.SyncBuffer{})
	st, err := handshake(d, &tls.Config{MaxVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != tls.VersionTLS12 || st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
		t.Errorf("negotiated %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
	for name, c := range map[string]*tls.Config{
		"TLS 1.3 only":       {MinVersion: tls.VersionTLS13},
		"AES-256 suite only": {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}},
		"ChaCha20 only":      {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}},
	} {
		if st, err := handshake(d, c); err == nil {
			t.Errorf("%s: negotiated %s %s", name, tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		}
	}
	// The certificate's key is on P-256: a client must offer that curve
	// (ssl_check_key_curve); X25519 is no TLS curve of mbedTLS 2.16.
	for curve, ok := range map[tls.CurveID]bool{tls.CurveP256: true, tls.CurveP384: false, tls.CurveP521: false, tls.X25519: false} {
		if _, err := handshake(d, &tls.Config{CurvePreferences: []tls.CurveID{curve}}); (err == nil) != ok {
			t.Errorf("curve %v: %v", curve, err)
		}
	}
	// The server prefers P-256, then P-521, then P-384.
	if st, err := handshake(d, &tls.Config{CurvePreferences: []tls.CurveID{tls.CurveP384, tls.CurveP521, tls.CurveP256}}); err != nil || st.CurveID != tls.CurveP256 {
		t.Errorf("curve choice %v %v", st.CurveID, err)
	}
}

func TestTLSWithOpenSSLAndCurl(t *testing.T) {
	var log testkit.SyncBuffer
	d := tlsDevice(t, &log)
	openssl := testkit.NeedTool(t, "", "openssl")
	sclient := func(args ...string) (string, error) {
		cmd := exec.Command(openssl, append([]string{"s_client", "-connect", d.HTTPAddr(), "-brief"}, args...)...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := sclient()
	if err != nil || !strings.Contains(out, "Protocol version: TLSv1.2") || !strings.Contains(out, "Ciphersuite: ECDHE-ECDSA-AES128-GCM-SHA256") {
		t.Errorf("openssl s_client: %v\n%s", err, out)
	}
	if out, err := sclient("-tls1_3"); err == nil || strings.Contains(out, "Protocol version: TLSv1.3") {
		t.Errorf("openssl s_client -tls1_3 connected:\n%s", out)
	}
	// CBC suites work only without encrypt-then-MAC: the fork's EtM code
	// sends garbage MACs (see tls/tls12).
	if out, err := sclient("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256", "-no_etm"); err != nil || !strings.Contains(out, "Ciphersuite: ECDHE-ECDSA-AES128-SHA256") {
		t.Errorf("CBC-SHA256 suite: %v\n%s", err, out)
	}
	if out, err := sclient("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"); err == nil || !strings.Contains(out, "bad record mac") {
		t.Errorf("CBC-SHA256 suite with EtM: %v\n%s", err, out)
	}

	curl := testkit.NeedTool(t, "", "curl")
	cmd := exec.Command(curl, "-sk", "-o", "/dev/null", "-w", "%{ssl_verify_result}", "--tlsv1.3", "https://"+d.HTTPAddr()+"/rpc/RPC.Ping")
	if err := cmd.Run(); err == nil {
		t.Error("curl --tlsv1.3 connected")
	}
	// Plain HTTP to the TLS port: dropped without an answer (curl: empty
	// reply, or a reset as lwIP closes with unread data).
	cmd = exec.Command(curl, "-s", "http://"+d.HTTPAddr()+"/rpc/RPC.Ping")
	out2, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || (ee.ExitCode() != 52 && ee.ExitCode() != 56) || len(out2) != 0 {
		t.Errorf("plain HTTP to the TLS port: %v %q", err, out2)
	}
	log.WaitFor(t, `mbedTLS error: -0x7200`)
}
