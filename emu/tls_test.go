package emu

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/rpc/client"
)

// pki is a P-256 certificate made by issue, with its PEM forms.
type pki struct {
	c    *testkit.Cert
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
	kpem string
}

// issue makes a certificate for localhost, for servers and clients, signed
// by parent (self-signed when nil).
func issue(t *testing.T, cn string, parent *pki, isCA bool) *pki {
	t.Helper()
	var p *testkit.Cert
	if parent != nil {
		p = parent.c
	}
	c := testkit.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, nil, p)
	return &pki{c, c.X509, c.Key.(*ecdsa.PrivateKey), string(c.CertPEM()), string(c.KeyPEM())}
}

func (p *pki) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.cert.Raw}, PrivateKey: p.key}
}

// configureTLS puts files on the device and sets http.ssl_*, then reboots.
func configureTLS(t *testing.T, d *Device, scheme string, files map[string]string, cfg map[string]any) {
	t.Helper()
	c := dial(t, scheme+"://"+d.HTTPAddr()+"/rpc")
	for n, data := range files {
		call(t, c, "FS.Put", map[string]any{"filename": n, "data": base64.StdEncoding.EncodeToString([]byte(data))})
	}
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"http": cfg}, "save": true})
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
}

func httpsGet(d *Device, certs ...tls.Certificate) (string, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: certs}}}
	r, err := hc.Get("https://" + d.HTTPAddr() + "/rpc/Sys.GetInfo")
	if err != nil {
		return "", err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return string(b), err
}

func TestHTTPSAndMutualTLS(t *testing.T) {
	d := startDevice(t, t.TempDir(), false)
	ca := issue(t, "Workshop CA", nil, true)
	srv := issue(t, "device", ca, false)
	configureTLS(t, d, "http", map[string]string{"cert.pem": srv.pem, "key.pem": srv.kpem},
		map[string]any{"listen_addr": "443", "ssl_cert": "cert.pem", "ssl_key": "key.pem"})
	if body, err := httpsGet(d); err != nil || !strings.Contains(body, `"arch": "esp32"`) {
		t.Fatalf("one-way TLS: %q %v", body, err)
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command(curl, "-sk", "https://"+d.HTTPAddr()+"/rpc/RPC.Ping").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "channel_info") {
			t.Fatalf("curl -k: %s %v", out, err)
		}
	} else {
		testkit.PeerNote(t, "curl not installed: the curl -k part did not run")
	}
	// WSS with the Go client, as mos --port wss:// does.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wc, err := client.Dial(ctx, "wss://"+d.HTTPAddr()+"/rpc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wc.Call(ctx, "RPC.List", nil); err != nil {
		t.Fatal(err)
	}
	wc.Close()

	// Mutual TLS.
	good := issue(t, "client", ca, false)
	other := issue(t, "Other CA", nil, true)
	bad := issue(t, "intruder", other, false)
	configureTLS(t, d, "https", map[string]string{"ca.pem": ca.pem}, map[string]any{"ssl_ca_cert": "ca.pem"})
	if _, err := httpsGet(d); err == nil {
		t.Fatal("mutual TLS: accepted a client without a certificate")
	}
	if _, err := httpsGet(d, bad.tlsCert()); err == nil {
		t.Fatal("mutual TLS: accepted a certificate from another CA")
	}
	if body, err := httpsGet(d, good.tlsCert()); err != nil || !strings.Contains(body, `"id"`) {
		t.Fatalf("mutual TLS with the right certificate: %q %v", body, err)
	}
}

// TestTLSConnectionFlood reproduces "a few TLS connections are enough for a
// DoS": with mbedTLS static buffers the fifth idle connection no longer
// fits in an ESP32's heap; the dynamic-buffer patch lifts the limit.
func TestTLSConnectionFlood(t *testing.T) {
	srvPKI := issue(t, "device", nil, true)
	for _, dynamic := range []bool{false, true} {
		var log testkit.SyncBuffer
		d, err := New(Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 9, TLSDynamicBuffers: dynamic, Console: &log})
		if err != nil {
			t.Fatal(err)
		}
		d.Start(context.Background())
		configureTLS(t, d, "http", map[string]string{"cert.pem": srvPKI.pem, "key.pem": srvPKI.kpem},
			map[string]any{"ssl_cert": "cert.pem", "ssl_key": "key.pem"})
		var conns []*tls.Conn
		accepted := 0
		for i := 0; i < 12; i++ {
			c, err := tls.Dial("tcp", d.HTTPAddr(), &tls.Config{InsecureSkipVerify: true})
			if err == nil {
				err = c.Handshake()
			}
			if err != nil {
				break
			}
			conns = append(conns, c)
			accepted++
		}
		_, err = httpsGet(d)
		for _, c := range conns {
			c.Close()
		}
		if !dynamic && (accepted != 4 || err == nil) {
			t.Errorf("static buffers: %d idle connections accepted (want 4), then a request: %v", accepted, err)
		}
		// The line README.md quotes.
		if oom := "needs 41018 bytes, 49928 free of which 16384 are the firmware's reserve; closing finding=out of memory"; !dynamic && !strings.Contains(log.String(), oom) {
			t.Errorf("console lacks %q:\n%s", oom, log.String())
		}
		if dynamic && (accepted != 12 || err != nil) {
			t.Errorf("dynamic buffers: %d idle connections accepted (want 12), then a request: %v", accepted, err)
		}
		d.Close()
	}
}

func TestTLSHandshakeLatency(t *testing.T) {
	srvPKI := issue(t, "device", nil, true)
	d, err := New(Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 10, TLSHandshakeLatency: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Start(context.Background())
	configureTLS(t, d, "http", map[string]string{"cert.pem": srvPKI.pem, "key.pem": srvPKI.kpem},
		map[string]any{"ssl_cert": "cert.pem", "ssl_key": "key.pem"})
	start := time.Now()
	c, err := tls.Dial("tcp", d.HTTPAddr(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if took := time.Since(start); took < time.Second || took > 4*time.Second {
		t.Fatalf("ESP32 handshake took %v, want 1-3 s", took)
	}
}

// TestTLSConnectionFloodESP8266: with about 45 KiB free after init, an
// ESP8266 holds one TLS connection with mbedTLS's static 16 KiB record
// buffers; the second is refused for lack of RAM.
func TestTLSConnectionFloodESP8266(t *testing.T) {
	srvPKI := issue(t, "device", nil, true)
	d, err := New(Options{Arch: "esp8266", StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Start(context.Background())
	configureTLS(t, d, "http", map[string]string{"cert.pem": srvPKI.pem, "key.pem": srvPKI.kpem},
		map[string]any{"ssl_cert": "cert.pem", "ssl_key": "key.pem"})
	if _, err := httpsGet(d); err != nil {
		t.Fatalf("first HTTPS request: %v", err)
	}
	// Hold one connection open (the request's may take a moment to be
	// freed on the device).
	var c *tls.Conn
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err = tls.Dial("tcp", d.HTTPAddr(), &tls.Config{InsecureSkipVerify: true}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	defer c.Close()
	if _, err := httpsGet(d); err == nil {
		t.Fatal("a second TLS connection fitted in an ESP8266's heap")
	}
	c.Close()
	// The device frees the connection's buffers once it sees the close.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := httpsGet(d)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the first connection closed: %v", err)
		}
	}
}
