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
	"strings"
	"testing"
	"time"
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

// TestATCAProvisioningWalkthrough follows the seed: set-config, lock
// config, set the write key (slot 4), lock data, set the ECC key (slot 0)
// with an encrypted PrivWrite, then get-pub-key and sign.
func TestATCAProvisioningWalkthrough(t *testing.T) {
	dir := t.TempDir()
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
	if len(gc.Config) != 128 || gc.Config[87] != 0x55 || binary.BigEndian.Uint16(gc.Config[6:]) != 0x6002 {
		t.Fatalf("blank config %x", gc.Config)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A blank chip fails crypto with an execution error (0xf4).
	if _, err := c.Call(ctx, "ATCA.GenKey", map[string]any{"slot": 0}); err == nil || !strings.Contains(err.Error(), "0xf4") {
		t.Fatalf("GenKey on a blank chip: %v", err)
	}
	call(t, c, "ATCA.SetConfig", map[string]any{"config": provisioningConfig(gc.Config)})
	call(t, c, "ATCA.LockZone", map[string]any{"zone": 0})
	writeKey := make([]byte, 32)
	rand.Read(writeKey)
	call(t, c, "ATCA.SetKey", map[string]any{"slot": 4, "key": writeKey})
	call(t, c, "ATCA.LockZone", map[string]any{"zone": 1})

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	scalar := key.D.FillBytes(make([]byte, 32))
	wrong := append([]byte(nil), writeKey...)
	wrong[0] ^= 1
	if _, err := c.Call(ctx, "ATCA.SetKey", map[string]any{"slot": 0, "ecc": true, "key": scalar, "wkey": wrong, "wkslot": 4}); err == nil || !strings.Contains(err.Error(), "0xd1") {
		t.Fatalf("SetKey with the wrong write key: %v", err)
	}
	call(t, c, "ATCA.SetKey", map[string]any{"slot": 0, "ecc": true, "key": scalar, "wkey": writeKey, "wkslot": 4})
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
	var con syncBuffer
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
	con.waitFor(t, `ATCA:16 ECDH ok`)
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
