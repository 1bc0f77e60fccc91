package emu

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/mqtt"
	"github.com/mosemu/mosemu/rpc/client"
)

// provisioningConfig is a config zone for the walkthrough: slot 0 an ECC
// private key (external signing, GenKey, encrypted PrivWrite with write key
// slot 4), slot 4 a 32-byte write key.
func provisioningConfig(blank []byte) []byte {
	cfg := append([]byte(nil), blank...)
	binary.LittleEndian.PutUint16(cfg[20+0:], 0x6481) // slot 0: ExtSign, IsSecret, WriteKey 4, GenKey + PrivWrite-encrypt
	binary.LittleEndian.PutUint16(cfg[96+0:], 0x0033) // P-256 private, PubInfo, lockable
	binary.LittleEndian.PutUint16(cfg[20+8:], 0x8F8F) // slot 4: secret, never written after lock
	binary.LittleEndian.PutUint16(cfg[96+8:], 0x001C) // other data
	return cfg
}

// provisionATCA does the seed's provisioning over RPC: set-config, lock
// config, set the write key (slot 4), lock data, set the ECC key (slot 0)
// with an encrypted PrivWrite. It returns the slot 0 key and the write key.
func provisionATCA(t *testing.T, c *client.Client, blank []byte) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	call(t, c, "ATCA.SetConfig", map[string]any{"config": provisioningConfig(blank)})
	call(t, c, "ATCA.LockZone", map[string]any{"zone": 0})
	writeKey := make([]byte, 32)
	rand.Read(writeKey)
	call(t, c, "ATCA.SetKey", map[string]any{"slot": 4, "key": writeKey})
	call(t, c, "ATCA.LockZone", map[string]any{"zone": 1})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	call(t, c, "ATCA.SetKey", map[string]any{"slot": 0, "ecc": true, "key": key.D.FillBytes(make([]byte, 32)), "wkey": writeKey, "wkslot": 4})
	return key, writeKey
}

// atcaDevice starts a device in dir with the chip on the bus (sys.atca and
// i2c enabled) and returns it, an RPC client and the chip's config zone.
func atcaDevice(t *testing.T, dir string) (*Device, *client.Client, []byte) {
	t.Helper()
	d := startDevice(t, dir, false)
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"sys": map[string]any{"atca": map[string]any{"enable": true}},
		"i2c": map[string]any{"enable": true}}, "save": true})
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	c = dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	var gc struct{ Config []byte }
	json.Unmarshal(call(t, c, "ATCA.GetConfig", nil), &gc)
	return d, c, gc.Config
}

// TestATCAProvisioningWalkthrough follows the seed: set-config, lock
// config, set the write key (slot 4), lock data, set the ECC key (slot 0)
// with an encrypted PrivWrite, then get-pub-key and sign.
func TestATCAProvisioningWalkthrough(t *testing.T) {
	dir := t.TempDir()
	d, c, blank := atcaDevice(t, dir)
	if len(blank) != 128 || blank[87] != 0x55 || binary.BigEndian.Uint16(blank[6:]) != 0x6002 {
		t.Fatalf("blank config %x", blank)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A blank chip fails crypto with an execution error (0xf4).
	if _, err := c.Call(ctx, "ATCA.GenKey", map[string]any{"slot": 0}); err == nil || !strings.Contains(err.Error(), "0xf4") {
		t.Fatalf("GenKey on a blank chip: %v", err)
	}
	key, writeKey := provisionATCA(t, c, blank)
	wrong := append([]byte(nil), writeKey...)
	wrong[0] ^= 1
	if _, err := c.Call(ctx, "ATCA.SetKey", map[string]any{"slot": 0, "ecc": true, "key": key.D.FillBytes(make([]byte, 32)), "wkey": wrong, "wkslot": 4}); err == nil || !strings.Contains(err.Error(), "0xd1") {
		t.Fatalf("SetKey with the wrong write key: %v", err)
	}
	var pk struct{ Pubkey []byte }
	json.Unmarshal(call(t, c, "ATCA.GetPubKey", map[string]any{"slot": 0}), &pk)
	want := append(key.X.FillBytes(make([]byte, 32)), key.Y.FillBytes(make([]byte, 32))...)
	if string(pk.Pubkey) != string(want) {
		t.Fatalf("GetPubKey %x, want %x", pk.Pubkey, want)
	}
	digest := sha256.Sum256([]byte("sign me"))
	var sg struct{ Signature []byte }
	json.Unmarshal(call(t, c, "ATCA.Sign", map[string]any{"slot": 0, "digest": digest[:]}), &sg)
	r, s := new(big.Int).SetBytes(sg.Signature[:32]), new(big.Int).SetBytes(sg.Signature[32:])
	if !ecdsa.Verify(&key.PublicKey, digest[:], r, s) {
		t.Fatal("chip signature does not verify")
	}

	// HTTPS with http.ssl_key=ATCA:0: the handshake is signed by the chip.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "device"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	call(t, c, "FS.Put", map[string]any{"filename": "cert.pem", "data": base64.StdEncoding.EncodeToString(certPEM)})
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"http": map[string]any{"ssl_cert": "cert.pem", "ssl_key": "ATCA:0"}}, "save": true})
	// Mutual TLS: client certificates of this CA, their signatures checked
	// by the chip.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Lab CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	cliKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cliDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "student"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, caCert, &cliKey.PublicKey, caKey)
	call(t, c, "FS.Put", map[string]any{"filename": "ca.pem", "data": base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))})
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"http": map[string]any{"ssl_cert": "cert.pem", "ssl_key": "ATCA:0", "ssl_ca_cert": "ca.pem"}}, "save": true})
	d.Close()
	var con testkit.SyncBuffer
	d2, err := New(Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Seed: 42, Console: &con}) // the chip's state survives the restart
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if err := d2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", d2.HTTPAddr(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}}})
	if err != nil {
		t.Fatalf("TLS with an ATCA:0 key: %v", err)
	}
	defer conn.Close()
	if !conn.ConnectionState().PeerCertificates[0].PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Fatal("server certificate key differs from the chip's")
	}
	// mbedTLS with the chip: the ECDHE key in TempKey, the ServerKeyExchange
	// signed in slot 0, the client certificate's signature (ECDSA P-256,
	// SHA-256) checked, and the premaster secret computed on the chip, in
	// that order. (The CertificateVerify is SHA-384 with Go, OpenSSL and
	// curl alike: the chip leaves that one to software, silently.)
	con.WaitFor(t, `ATCA:16 ECDH ok`)
	log := con.String()
	at := -1
	for _, line := range []string{"ATCA:16 ECDH gen pubkey ok", "ATCA:0 ECDSA sign ok", "ATCA ECDSA verify ok, verified", "ATCA:16 ECDH ok"} {
		i := strings.Index(log, line)
		if i < at {
			t.Fatalf("%q missing or out of order:\n%s", line, log)
		}
		at = i
	}
}

// TestMQTTTLSWithATCAKey: mqtt.ssl_key=ATCA:0 (AWS IoT style). The device,
// a TLS client with the chip, offers only P-256 and SHA-256 ECDSA; the
// broker's certificate and ServerKeyExchange are verified by the chip, the
// ECDHE runs in TempKey and the CertificateVerify is signed in slot 0.
func TestMQTTTLSWithATCAKey(t *testing.T) {
	dir := t.TempDir()
	d, c, blank := atcaDevice(t, dir)
	key, _ := provisionATCA(t, c, blank)

	ca := issue(t, "Broker CA", nil, true)
	srv := issue(t, "localhost", ca, false)
	devDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "device"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, ca.cert, &key.PublicKey, ca.key)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	var hello *tls.ClientHelloInfo
	var mu sync.Mutex
	b, err := mqtt.StartBroker("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srv.tlsCert()}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { mu.Lock(); hello = h; mu.Unlock(); return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, port, _ := net.SplitHostPort(b.Addr())
	for n, data := range map[string][]byte{"ca.pem": []byte(ca.pem), "device.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: devDER})} {
		call(t, c, "FS.Put", map[string]any{"filename": n, "data": base64.StdEncoding.EncodeToString(data)})
	}
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"mqtt": map[string]any{
		"enable": true, "server": "localhost:" + port, "ssl_ca_cert": "ca.pem", "ssl_cert": "device.pem", "ssl_key": "ATCA:0",
		"reconnect_timeout_min": 0.2}}, "save": true})
	d.Close()
	var con testkit.SyncBuffer
	d2 := startWith(t, Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Seed: 42, Console: &con})
	waitMQTT(t, d2, true)
	mu.Lock()
	curves, sigs := hello.SupportedCurves, hello.SignatureSchemes
	mu.Unlock()
	if len(curves) != 1 || curves[0] != tls.CurveP256 || slices.Contains(sigs, tls.ECDSAWithP384AndSHA384) || !slices.Contains(sigs, tls.ECDSAWithP256AndSHA256) {
		t.Errorf("ClientHello with the chip: curves %v, signature schemes %v", curves, sigs)
	}
	log := con.String()
	at := -1
	for _, line := range []string{"ATCA ECDSA verify ok, verified", "ATCA:16 ECDH gen pubkey ok", "ATCA:16 ECDH ok", "ATCA:0 ECDSA sign ok"} {
		i := strings.Index(log[max(at, 0):], line)
		if i < 0 {
			t.Fatalf("%q missing or out of order:\n%s", line, log)
		}
		at = max(at, 0) + i
	}
	// The certificate (by the broker CA) and the ServerKeyExchange: two chip verifications.
	if n := strings.Count(log, "ATCA ECDSA verify ok, verified"); n != 2 {
		t.Errorf("%d chip verifications:\n%s", n, log)
	}
}
