package emu

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
)

// TestSeedAuthWalkthrough follows the security guide: htdigest file, auth
// domain and file, an ACL file, then calls over WS, HTTP and UART with the
// right password, a wrong one, and a deny-listed user.
func TestSeedAuthWalkthrough(t *testing.T) {
	d := startDevice(t, t.TempDir(), true)
	admin := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	ha1 := func(user, pass string) string {
		s := md5.Sum([]byte(user + ":myproduct:" + pass))
		return hex.EncodeToString(s[:])
	}
	htdigest := "joe:myproduct:" + ha1("joe", "secret") + "\nmallory:myproduct:" + ha1("mallory", "evil") + "\n"
	acl := `[{"method":"FS.*","acl":"+joe,-mallory"},{"method":"Sys.GetInfo","acl":"*"},{"method":"Config.*","ch_type":"UART","acl":"*"},{"method":"*","acl":"-*"}]`
	put := func(name, data string) {
		call(t, admin, "FS.Put", map[string]any{"filename": name, "data": base64.StdEncoding.EncodeToString([]byte(data))})
	}
	put("rpc_auth.txt", htdigest)
	put("rpc_acl.json", acl)
	call(t, admin, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{
		"auth_domain": "myproduct", "auth_file": "rpc_auth.txt", "acl_file": "rpc_acl.json"}}, "save": true, "reboot": true})
	time.Sleep(800 * time.Millisecond)

	urls := map[string]string{"WS": "ws://" + d.HTTPAddr() + "/rpc", "HTTP": "http://" + d.HTTPAddr() + "/rpc", "UART": d.SerialPath()}
	for ch, url := range urls {
		t.Run(ch, func(t *testing.T) {
			tests := []struct {
				name, user, pass, method string
				code                     int // 0 = success
			}{
				{"open method", "", "", "Sys.GetInfo", 0},
				{"no credentials", "", "", "FS.List", 401},
				{"right password", "joe", "secret", "FS.List", 0},
				{"wrong password", "joe", "wrong", "FS.List", 401},
				{"deny-listed user", "mallory", "evil", "FS.List", 403},
				{"no matching entry", "joe", "secret", "RPC.List", 403},
			}
			for _, tt := range tests {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := client.Dial(ctx, url, client.WithCredentials(tt.user, tt.pass))
				if err != nil {
					t.Fatal(err)
				}
				_, err = c.Call(ctx, tt.method, nil)
				c.Close()
				cancel()
				var e *rpc.Error
				switch {
				case tt.code == 0 && err != nil:
					t.Errorf("%s: %v", tt.name, err)
				case tt.code != 0 && (!errors.As(err, &e) || e.Code != tt.code):
					t.Errorf("%s: err %v, want code %d", tt.name, err, tt.code)
				}
			}
		})
	}
	// ch_type entry: Config.* is open on the UART only.
	u := dial(t, d.SerialPath())
	call(t, u, "Config.Get", map[string]any{"key": "rpc.auth_domain"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w := dial(t, urls["WS"])
	if _, err := w.Call(ctx, "Config.Get", nil); err == nil {
		t.Fatal("Config.Get allowed over WS")
	}
}

// TestReplayWithinWindowAccepted documents the firmware's weakness: the
// same authenticated frame works twice.
func TestReplayWithinWindowAccepted(t *testing.T) {
	d := startDevice(t, t.TempDir(), false)
	admin := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	s := md5.Sum([]byte("joe:RPC:secret"))
	call(t, admin, "FS.Put", map[string]any{"filename": "pw", "data": base64.StdEncoding.EncodeToString([]byte("joe:RPC:" + hex.EncodeToString(s[:])))})
	call(t, admin, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"auth_file": "pw", "acl": `[{"method":"*","acl":"joe"}]`}}})
	fa := client.FrameDigest("RPC", "joe", "secret", time.Now().Unix(), "MD5")
	for i := 0; i < 2; i++ {
		frame := []byte(`{"id":7,"src":"x","method":"RPC.Ping","auth":{"realm":"RPC","username":"joe","nonce":` + string(fa.Nonce) + `,"cnonce":` + string(fa.CNonce) + `,"response":"` + fa.Response + `"}}`)
		reply, err := d.fw.disp.HandleFrame(context.Background(), rpc.ChannelInfo{Type: rpc.ChanWS, Info: "replay"}, frame)
		if err != nil || !contains(reply, `"result"`) {
			t.Fatalf("attempt %d: %s %v", i, reply, err)
		}
	}
	stale := client.FrameDigest("RPC", "joe", "secret", time.Now().Add(-2*time.Hour).Unix(), "MD5")
	frame := []byte(`{"id":8,"method":"RPC.Ping","auth":{"realm":"RPC","username":"joe","nonce":` + string(stale.Nonce) + `,"cnonce":` + string(stale.CNonce) + `,"response":"` + stale.Response + `"}}`)
	reply, _ := d.fw.disp.HandleFrame(context.Background(), rpc.ChannelInfo{Type: rpc.ChanWS}, frame)
	if !contains(reply, `"code":401`) {
		t.Fatalf("stale nonce: %s", reply)
	}
}

func contains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }

// TestChannelSwitches: rpc.ws.enable=false answers the upgrade with 503,
// rpc.http_enable=false unregisters /rpc, rpc.uart.uart_no=-1 leaves the
// serial port to the console.
func TestChannelSwitches(t *testing.T) {
	d := startDevice(t, t.TempDir(), true)
	c := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"ws": map[string]any{"enable": false}, "uart": map[string]any{"uart_no": -1}}}, "save": true, "reboot": true})
	time.Sleep(800 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := client.Dial(ctx, "ws://"+d.HTTPAddr()+"/rpc"); err == nil || !strings.Contains(err.Error(), "bad handshake") {
		t.Fatalf("WS with rpc.ws.enable=false: %v", err)
	}
	u := dial(t, d.SerialPath())
	uctx, ucancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer ucancel()
	if _, err := u.Call(uctx, "RPC.Ping", nil); err == nil {
		t.Fatal("UART RPC answered with rpc.uart.uart_no=-1")
	}
	c2 := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	call(t, c2, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"http_enable": false}}, "save": true, "reboot": true})
	time.Sleep(800 * time.Millisecond)
	if _, err := c2.Call(ctx, "RPC.Ping", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("HTTP with rpc.http_enable=false: %v", err)
	}
}
