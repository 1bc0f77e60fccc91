package tls12

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
)

func writePEM(t *testing.T, dir, name string, c *testCert) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.tls.Certificate[0]}), 0o600)
	der, err := x509.MarshalPKCS8PrivateKey(c.tls.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	return
}

// serveOnce accepts connections and runs our server with cfg on each,
// echoing one line.
func serveOnce(t *testing.T, cfg *Config) string {
	t.Helper()
	l := testkit.Serve(t, func(c net.Conn) {
		go func() {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			s := Server(c, cfg)
			defer s.Close()
			buf := make([]byte, 1024)
			n, err := s.Read(buf)
			if err == nil {
				s.Write(buf[:n])
			}
		}()
	})
	return l.Addr().String()
}

// TestOpenSSLClient: openssl s_client against our server: the negotiated
// suite, encrypt-then-MAC and extended master secret as openssl reports
// them, DHE, and client certificates.
func TestOpenSSLClient(t *testing.T) {
	openssl := testkit.NeedTool(t, "", "openssl")
	dir := t.TempDir()
	ca := issue(t, "CA", nil, false, true)
	ecSrv := issue(t, "device.local", ca, false, false)
	rsaSrv := issue(t, "device.local", ca, true, false)
	cli := issue(t, "client", ca, false, false)
	caFile, _ := writePEM(t, dir, "ca", ca)
	cliCert, cliKey := writePEM(t, dir, "cli", cli)
	pool := x509.NewCertPool()
	pool.AddCert(ca.x509)
	ec := serveOnce(t, &Config{Certificate: &ecSrv.tls})
	rsa := serveOnce(t, &Config{Certificate: &rsaSrv.tls})
	mtls := serveOnce(t, &Config{Certificate: &ecSrv.tls, ClientCAs: pool, ClientCAsDN: [][]byte{ca.x509.RawSubject}})
	for _, tc := range []struct {
		name, addr string
		args       []string
		want       []string
		fail       bool
	}{
		{"default", ec, nil, []string{"Protocol version: TLSv1.2", "Ciphersuite: ECDHE-ECDSA-AES128-GCM-SHA256", "Server Temp Key: ECDH, prime256v1, 256 bits"}, false},
		{"CBC with EtM (the fork's bug)", ec, []string{"-cipher", "ECDHE-ECDSA-AES128-SHA256"}, nil, true},
		{"CBC without EtM", ec, []string{"-cipher", "ECDHE-ECDSA-AES128-SHA256", "-no_etm"}, []string{"Ciphersuite: ECDHE-ECDSA-AES128-SHA256"}, false},
		{"DHE is not compiled", rsa, []string{"-cipher", "DHE-RSA-AES128-GCM-SHA256"}, nil, true},
		{"RSA kx", rsa, []string{"-cipher", "AES128-SHA", "-no_etm"}, []string{"Ciphersuite: AES128-SHA"}, false},
		{"P-384", rsa, []string{"-curves", "P-384"}, []string{"Ciphersuite: ECDHE-RSA-AES128-GCM-SHA256", "Server Temp Key: ECDH, secp384r1, 384 bits"}, false},
		{"X25519 only", ec, []string{"-curves", "X25519"}, nil, true},
		{"TLS 1.3", ec, []string{"-tls1_3"}, nil, true},
		{"client certificate", mtls, []string{"-cert", cliCert, "-key", cliKey, "-CAfile", caFile}, []string{"Ciphersuite: ECDHE-ECDSA-AES128-GCM-SHA256", "Verification: OK"}, false},
		{"no client certificate", mtls, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"s_client", "-connect", tc.addr, "-brief", "-ign_eof", "-tls1_2"}, tc.args...)
			if tc.name == "TLS 1.3" {
				args = append([]string{"s_client", "-connect", tc.addr, "-brief"}, tc.args...)
			}
			cmd := exec.Command(openssl, args...)
			cmd.Stdin = strings.NewReader("ping\n")
			out, err := cmd.CombinedOutput()
			s := string(out)
			if tc.fail {
				if err == nil && strings.Contains(s, "ping") && strings.Contains(s, "CONNECTION ESTABLISHED") {
					t.Fatalf("connected:\n%s", s)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, s)
			}
			for _, w := range append(tc.want, "ping") {
				if !strings.Contains(s, w) {
					t.Errorf("no %q in:\n%s", w, s)
				}
			}
		})
	}
}

// TestOpenSSLSeesEMSAndEtM: openssl reports the extended master secret,
// and a CBC handshake with encrypt-then-MAC ends in bad_record_mac as with
// the fork (openssl receives the server's Finished with a garbage MAC).
func TestOpenSSLSeesEMSAndEtM(t *testing.T) {
	openssl := testkit.NeedTool(t, "", "openssl")
	ecSrv := issue(t, "device.local", nil, false, false)
	states := make(chan ConnectionState, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s := Server(c, &Config{Certificate: &ecSrv.tls})
		defer s.Close()
		if s.Handshake() == nil {
			states <- s.ConnectionState()
		}
		buf := make([]byte, 100)
		n, _ := s.Read(buf)
		s.Write(buf[:n])
	}()
	cmd := exec.Command(openssl, "s_client", "-connect", l.Addr().String(), "-tls1_2", "-ign_eof", "-cipher", "ECDHE-ECDSA-AES128-SHA256")
	cmd.Stdin = strings.NewReader("ping\n")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bad record mac") {
		t.Fatalf("%v\n%s", err, out)
	}
	select {
	case st := <-states:
		if !st.EncryptThenMAC || !st.ExtendedMaster || len(st.SessionID) != 32 {
			t.Errorf("state %+v", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no handshake")
	}
}
