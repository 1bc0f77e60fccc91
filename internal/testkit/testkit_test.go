package testkit

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				fmt.Fprintf(&b, "w%d-%d\n", i, j)
			}
		})
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		b.Write([]byte("late line\n"))
	}()
	b.WaitFor(t, `(?m)^late line$`)
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 801 {
		t.Fatalf("%d lines, want 801", n)
	}
	b.Reset()
	if b.String() != "" {
		t.Fatalf("after Reset: %q", b.String())
	}
}

func TestServeAndFreeAddr(t *testing.T) {
	l := Serve(t, func(c net.Conn) {
		c.Write([]byte("hello"))
		c.Close()
	})
	for range 2 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(c); err != nil || string(b) != "hello" {
			t.Fatalf("read %q %v", b, err)
		}
		c.Close()
	}
	l.Close()
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Fatal("a closed listener accepted")
	}
	addr := FreeAddr(t)
	fl, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreeAddr gave %s: %v", addr, err)
	}
	fl.Close()
}

func TestIssue(t *testing.T) {
	ca := Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, leaf := range []*Cert{
		Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "dev"}, DNSNames: []string{"dev.local"}}, nil, ca),
		Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "dev"}, DNSNames: []string{"dev.local"}}, rsaKey, ca),
	} {
		pool := x509.NewCertPool()
		pool.AddCert(ca.X509)
		if _, err := leaf.X509.Verify(x509.VerifyOptions{Roots: pool, DNSName: "dev.local"}); err != nil {
			t.Errorf("%T leaf does not verify: %v", leaf.Key, err)
		}
		if _, err := tls.X509KeyPair(leaf.CertPEM(), leaf.KeyPEM()); err != nil {
			t.Errorf("%T PEM forms: %v", leaf.Key, err)
		}
	}
	if !strings.Contains(string(ca.KeyPEM()), "EC PRIVATE KEY") {
		t.Errorf("an ECDSA key is not in SEC 1 form:\n%s", ca.KeyPEM())
	}
}

// TestNeedTool runs TestNeedToolChild in a child process, outside and in
// CI: a missing tool skips the test, then fails it.
func TestNeedTool(t *testing.T) {
	if p := NeedTool(t, "", "no-such-tool-x", "go"); p == "" {
		t.Fatal("NeedTool found no go")
	}
	for _, ci := range []string{"", "true"} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestNeedToolChild$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTKIT_CHILD=1", "CI="+ci)
		out, err := cmd.CombinedOutput()
		switch {
		case ci == "" && (err != nil || !strings.Contains(string(out), "--- SKIP") ||
			!strings.Contains(string(out), "TestNeedToolChild: SKIP: no-such-tool-x not installed (apt-get install it)")):
			t.Errorf("outside CI: %v\n%s", err, out)
		case ci == "true" && (err == nil || !strings.Contains(string(out), "--- FAIL") || !strings.Contains(string(out), "CI=true")):
			t.Errorf("in CI: %v\n%s", err, out)
		}
	}
}

func TestNeedToolChild(t *testing.T) {
	if os.Getenv("TESTKIT_CHILD") != "1" {
		t.Skip("run by TestNeedTool")
	}
	NeedTool(t, "apt-get install it", "no-such-tool-x")
	t.Fatal("NeedTool returned for a missing tool")
}

func TestStoredZip(t *testing.T) {
	z := StoredZip(t, ZipFile{"fw/manifest.json", []byte(`{}`)}, ZipFile{"fw/app.bin", []byte("app")})
	// The first local header: stored (method 0), no data descriptor (flag
	// bit 3), the CRC and both sizes filled in.
	if string(z[:4]) != "PK\x03\x04" || z[6]&8 != 0 || z[8] != 0 || z[18] != 2 || z[22] != 2 || z[14]|z[15]|z[16]|z[17] == 0 {
		t.Fatalf("local header % x", z[:30])
	}
	r, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil || len(r.File) != 2 || r.File[0].Name != "fw/manifest.json" || r.File[1].Name != "fw/app.bin" {
		t.Fatalf("zip: %v %+v", err, r)
	}
	f, _ := r.File[1].Open()
	if b, err := io.ReadAll(f); err != nil || string(b) != "app" {
		t.Fatalf("fw/app.bin: %q %v", b, err)
	}
}
