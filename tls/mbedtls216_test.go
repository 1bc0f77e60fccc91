package devtls

import (
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// mbedFixture is one handshake recorded against the Mongoose OS fork of
// mbedTLS 2.16 (see testdata/mbedtls216/README.txt).
type mbedFixture struct {
	Name        string `json:"name"`
	Role        string `json:"mbedtls_role"`
	MbedCmd     string `json:"mbedtls_cmd"`
	PeerCmd     string `json:"peer_cmd"`
	Suite       string `json:"negotiated_suite"`
	HandshakeOK bool   `json:"handshake_ok"`
	Records     []struct {
		Dir  string `json:"dir"`
		Type int    `json:"type"`
		Hex  string `json:"hex"`
	} `json:"records"`
}

// TestMbedTLS216FixturesWellFormed checks that every recorded handshake
// decodes as TLS 1.2 records: a ClientHello first, then either a ServerHello
// (version 0x0303) or a fatal alert from the server.
func TestMbedTLS216FixturesWellFormed(t *testing.T) {
	files, err := filepath.Glob("testdata/mbedtls216/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("found %d fixtures, want at least 20", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var fx mbedFixture
			if err := json.Unmarshal(b, &fx); err != nil {
				t.Fatal(err)
			}
			if fx.Role != "server" && fx.Role != "client" || fx.MbedCmd == "" || fx.PeerCmd == "" {
				t.Fatalf("bad header: role %q, mbedtls_cmd %q, peer_cmd %q", fx.Role, fx.MbedCmd, fx.PeerCmd)
			}
			// Handshake bytes per direction, up to that direction's ChangeCipherSpec.
			hs := map[string][]byte{}
			ccs := map[string]bool{}
			var firstS2C, sawAppData = -1, false
			for i, r := range fx.Records {
				rec, err := hex.DecodeString(r.Hex)
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if len(rec) < 5 || int(binary.BigEndian.Uint16(rec[3:5])) != len(rec)-5 {
					t.Fatalf("record %d: length field does not match %d bytes", i, len(rec))
				}
				if int(rec[0]) != r.Type || rec[0] < 20 || rec[0] > 23 {
					t.Fatalf("record %d: content type %d, json type %d", i, rec[0], r.Type)
				}
				if v := binary.BigEndian.Uint16(rec[1:3]); v != 0x0303 && !(i == 0 && v == 0x0301) {
					t.Fatalf("record %d: record version %#04x", i, v)
				}
				switch r.Dir {
				case "c2s":
				case "s2c":
					if firstS2C < 0 {
						firstS2C = i
					}
				default:
					t.Fatalf("record %d: dir %q", i, r.Dir)
				}
				switch {
				case rec[0] == 20:
					ccs[r.Dir] = true
				case rec[0] == 22 && !ccs[r.Dir]:
					hs[r.Dir] = append(hs[r.Dir], rec[5:]...)
				case rec[0] == 23:
					sawAppData = true
				}
			}
			if sawAppData != fx.HandshakeOK {
				t.Fatalf("handshake_ok %v but application data present %v", fx.HandshakeOK, sawAppData)
			}
			if ch := hs["c2s"]; len(ch) < 4 || ch[0] != 1 {
				t.Fatal("first client handshake message is not a ClientHello")
			}
			sh := hs["s2c"]
			if len(sh) == 0 {
				// The server refused the ClientHello: a fatal alert, nothing else.
				r := fx.Records[firstS2C]
				if fx.HandshakeOK || r.Type != 21 || r.Hex[10:12] != "02" {
					t.Fatalf("no ServerHello and first server record %+v is not a fatal alert", r)
				}
				return
			}
			if len(sh) < 6 || sh[0] != 2 {
				t.Fatalf("first server handshake message type %d, want ServerHello (2)", sh[0])
			}
			if n := int(sh[1])<<16 | int(sh[2])<<8 | int(sh[3]); n+4 > len(sh) {
				t.Fatalf("ServerHello length %d exceeds %d bytes", n, len(sh)-4)
			}
			if v := binary.BigEndian.Uint16(sh[4:6]); v != 0x0303 {
				t.Fatalf("ServerHello version %#04x, want 0x0303", v)
			}
		})
	}
}

// TestMbedTLS216Credentials checks that the key pairs the fixtures were
// recorded with load.
func TestMbedTLS216Credentials(t *testing.T) {
	for _, name := range []string{"ca", "server-ec", "server-rsa", "client-ec"} {
		dir := "testdata/mbedtls216/"
		if _, err := tls.LoadX509KeyPair(dir+name+".crt.pem", dir+name+".key.pem"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
