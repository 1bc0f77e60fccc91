package tls12

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The fixtures in ../testdata/mbedtls216 are handshakes of the Mongoose OS
// mbedTLS fork recorded on the wire (see its README.txt).
type fixture struct {
	Name, MbedtlsRole, MbedtlsCmd string
	HandshakeOK                   bool
	Records                       []struct {
		Dir  string
		Type int
		Hex  string
	}
}

func loadFixtures(t *testing.T, glob string) []fixture {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "mbedtls216", glob))
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	var out []fixture
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var raw struct {
			Name        string `json:"name"`
			MbedtlsRole string `json:"mbedtls_role"`
			MbedtlsCmd  string `json:"mbedtls_cmd"`
			HandshakeOK bool   `json:"handshake_ok"`
			Records     []struct {
				Dir  string `json:"dir"`
				Type int    `json:"type"`
				Hex  string `json:"hex"`
			} `json:"records"`
		}
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatal(f, err)
		}
		fx := fixture{Name: raw.Name, MbedtlsRole: raw.MbedtlsRole, MbedtlsCmd: raw.MbedtlsCmd, HandshakeOK: raw.HandshakeOK}
		for _, r := range raw.Records {
			fx.Records = append(fx.Records, struct {
				Dir  string
				Type int
				Hex  string
			}{r.Dir, r.Type, r.Hex})
		}
		out = append(out, fx)
	}
	return out
}

func (f fixture) record(i int) []byte {
	b, _ := hex.DecodeString(f.Records[i].Hex)
	return b
}

func (f fixture) arg(name string) string {
	m := regexp.MustCompile(`\b` + name + `=(\S+)`).FindStringSubmatch(f.MbedtlsCmd)
	if m == nil {
		return ""
	}
	return m[1]
}

func fixtureKeyPair(t *testing.T, cert, key string) *tls.Certificate {
	t.Helper()
	dir := filepath.Join("..", "testdata", "mbedtls216")
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, cert), filepath.Join(dir, key))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// readFlight reads the records a peer sends until it waits for an answer:
// ServerHelloDone, an alert, or a closed connection.
func readFlight(c net.Conn) [][]byte {
	var recs [][]byte
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		h := make([]byte, 5)
		if _, err := io.ReadFull(c, h); err != nil {
			return recs
		}
		body := make([]byte, int(h[3])<<8|int(h[4]))
		if _, err := io.ReadFull(c, body); err != nil {
			return recs
		}
		rec := append(h, body...)
		recs = append(recs, rec)
		if h[0] == recordAlert || (h[0] == recordHandshake && body[0] == hsServerHelloDone) || h[0] == recordHandshake && body[0] == hsClientHello {
			return recs
		}
	}
}

// TestServerFlightMatchesMbedTLS: the recorded ClientHello of every server
// case, sent to our server with the same credentials, gets the first
// flight mbedTLS sent: the same records and messages, the same ServerHello
// but for its random bytes, the same Certificate and CertificateRequest,
// ServerKeyExchange on the same curve with the same hash and signature
// algorithm, or the same alert.
func TestServerFlightMatchesMbedTLS(t *testing.T) {
	for _, fx := range loadFixtures(t, "srv-*.json") {
		if strings.Contains(fx.Name, "caram") {
			continue // the CA loaded in RAM: not what a device does
		}
		t.Run(fx.Name, func(t *testing.T) {
			cfg := &Config{Certificate: fixtureKeyPair(t, fx.arg("crt_file"), fx.arg("key_file"))}
			if fx.arg("auth_mode") == "required" {
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(must(os.ReadFile(filepath.Join("..", "testdata", "mbedtls216", fx.arg("ca_file")))))
				cfg.ClientCAs = pool // CA chain on disk: no CA names are sent
			}
			var want [][]byte
			i := 1
			for ; i < len(fx.Records) && fx.Records[i].Dir == "s2c"; i++ {
				want = append(want, fx.record(i))
			}
			c1, c2 := net.Pipe()
			defer c1.Close()
			go Server(c2, cfg).Handshake()
			go c1.Write(fx.record(0))
			got := readFlight(c1)
			compareFlights(t, got, want)
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func compareFlights(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records, mbedTLS sent %d\ngot  %x\nwant %x", len(got), len(want), got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if w[0] != recordHandshake {
			if !bytes.Equal(g, w) {
				t.Errorf("record %d: %x, mbedTLS %x", i, g, w)
			}
			continue
		}
		switch w[5] {
		case hsServerHello:
			// Random bytes (32) and session id (32) differ; the rest is the same.
			g, w = append([]byte{}, g...), append([]byte{}, w...)
			copy(g[11:43], w[11:43])
			if len(g) > 44+32 && g[43] == 32 && w[43] == 32 {
				copy(g[44:76], w[44:76])
			}
			if !bytes.Equal(g, w) {
				t.Errorf("ServerHello\ngot  %x\nwant %x", g, w)
			}
		case hsServerKeyExchange:
			// curve type, curve, point length; then the algorithm ids.
			if g[1] != w[1] || g[2] != w[2] || !bytes.Equal(g[9:13], w[9:13]) {
				t.Errorf("ServerKeyExchange params\ngot  %x\nwant %x", g[:20], w[:20])
			}
			pl := int(w[12])
			if !bytes.Equal(g[13+pl:15+pl], w[13+pl:15+pl]) {
				t.Errorf("ServerKeyExchange algorithm %x, mbedTLS %x", g[13+pl:15+pl], w[13+pl:15+pl])
			}
		default:
			if !bytes.Equal(g, w) {
				t.Errorf("handshake message %d\ngot  %x\nwant %x", w[5], g, w)
			}
		}
	}
}

// TestClientHelloMatchesMbedTLS: our ClientHello is the fork's, byte for
// byte but for its random bytes.
func TestClientHelloMatchesMbedTLS(t *testing.T) {
	for _, fx := range loadFixtures(t, "cli-*.json") {
		t.Run(fx.Name, func(t *testing.T) {
			cfg := &Config{ServerName: fx.arg("server_name")}
			if fx.arg("crt_file") != "" {
				cfg.Certificate = fixtureKeyPair(t, fx.arg("crt_file"), fx.arg("key_file"))
			}
			c1, c2 := net.Pipe()
			defer c1.Close()
			go Client(c2, cfg).Handshake()
			got := readFlight(c1)
			want := fx.record(0)
			if len(got) != 1 {
				t.Fatalf("%d records", len(got))
			}
			g := append([]byte{}, got[0]...)
			if len(g) == len(want) {
				copy(g[11:43], want[11:43])
			}
			if !bytes.Equal(g, want) {
				t.Errorf("ClientHello\ngot  %x\nwant %x", g, want)
			}
		})
	}
}
