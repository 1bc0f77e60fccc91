package emu

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/mqtt"
)

// deviceWithMQTTTLS starts a device whose config points at broker with
// mutual TLS (ssl_ca_cert, ssl_cert, ssl_key on the device filesystem).
func deviceWithMQTTTLS(t *testing.T, broker string, ca, client *pki) *Device {
	t.Helper()
	d := startDevice(t, t.TempDir(), false)
	c := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	for n, data := range map[string]string{"ca.pem": ca.pem, "client.pem": client.pem, "client.key": client.kpem} {
		call(t, c, "FS.Put", map[string]any{"filename": n, "data": base64.StdEncoding.EncodeToString([]byte(data))})
	}
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"mqtt": map[string]any{
		"enable": true, "server": broker, "ssl_ca_cert": "ca.pem", "ssl_cert": "client.pem", "ssl_key": "client.key",
		"reconnect_timeout_min": 0.2}}, "save": true})
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestMQTTMutualTLSEmbeddedBroker(t *testing.T) {
	ca := issue(t, "Broker CA", nil, true)
	srv := issue(t, "localhost", ca, false)
	good := issue(t, "device", ca, false)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	b, err := mqtt.StartBroker("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srv.tlsCert()}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, port, _ := net.SplitHostPort(b.Addr())
	d := deviceWithMQTTTLS(t, "localhost:"+port, ca, good)
	waitMQTT(t, d, true)

	// A device with a certificate from another CA is refused.
	other := issue(t, "Other CA", nil, true)
	d2 := deviceWithMQTTTLS(t, "localhost:"+port, ca, issue(t, "intruder", other, false))
	time.Sleep(time.Second)
	if d2.MQTTConnected() {
		t.Fatal("broker accepted a device certificate from another CA")
	}
}

func TestMQTTMutualTLSMosquitto(t *testing.T) {
	ca := issue(t, "Broker CA", nil, true)
	srv := issue(t, "localhost", ca, false)
	dir := t.TempDir()
	for n, s := range map[string]string{"ca.pem": ca.pem, "srv.pem": srv.pem, "srv.key": srv.kpem} {
		os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644)
	}
	port := testkit.StartMosquitto(t, fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n",
		filepath.Join(dir, "ca.pem"), filepath.Join(dir, "srv.pem"), filepath.Join(dir, "srv.key")))
	d := deviceWithMQTTTLS(t, fmt.Sprintf("localhost:%d", port), ca, issue(t, "device", ca, false))
	waitMQTT(t, d, true)
}
