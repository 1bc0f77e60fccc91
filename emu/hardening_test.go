package emu

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/mqtt"
	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
	"github.com/mosemu/mosemu/tls/tls12"
)

// startWatched starts a device whose console is captured.
func startWatched(t testing.TB, o Options) (*Device, *testkit.SyncBuffer) {
	t.Helper()
	con := &testkit.SyncBuffer{}
	o.Console = con
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	o.HTTPAddr = "127.0.0.1:0"
	if o.Seed == 0 {
		o.Seed = 42
	}
	return startWith(t, o), con
}

func startBroker(t testing.TB) *mqtt.Broker {
	t.Helper()
	b, err := mqtt.StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// mqttFrame publishes a raw frame to <devID>/rpc and returns the reply
// published to replyTopic, or nil after wait.
func mqttFrame(t *testing.T, broker, devID, replyTopic, frame string, wait time.Duration) []byte {
	t.Helper()
	b, err := mqttRequest(broker, fmt.Sprintf("h-%d", time.Now().UnixNano()), devID, replyTopic, frame, wait)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitRPCOverMQTT waits until the device answers RPC over MQTT (connected
// and subscribed: a request published earlier would be lost).
func waitRPCOverMQTT(t *testing.T, broker string, d *Device) {
	t.Helper()
	waitMQTT(t, d, true)
	for deadline := time.Now().Add(15 * time.Second); ; {
		src := d.DeviceID() + "/rpc-resp/wait"
		if r := mqttFrame(t, broker, d.DeviceID(), src+"/rpc", fmt.Sprintf(`{"id":1,"src":%q,"method":"RPC.Ping"}`, src), time.Second); r != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no answer over MQTT")
		}
	}
}

func rpcCode(err error) int {
	var e *rpc.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// TestFSPutHugeOffset: an offset near the int64 limit (or past the
// filesystem) on an existing file is an error reply over the pty and over
// MQTT, not a crash; the file is intact.
func TestFSPutHugeOffset(t *testing.T) {
	b := startBroker(t)
	d, _ := startWatched(t, Options{Serial: true, MQTTBroker: b.Addr()})
	waitRPCOverMQTT(t, b.Addr(), d)
	u := dial(t, d.SerialPath())
	call(t, u, "FS.Put", map[string]any{"filename": "v", "data": base64.StdEncoding.EncodeToString([]byte("hello"))})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, off := range []int64{9223372036854775807, 9223372036854775806, 1 << 40, 1 << 31} {
		if _, err := u.Call(ctx, "FS.Put", json.RawMessage(fmt.Sprintf(`{"filename":"v","offset":%d,"data":"QQ=="}`, off))); rpcCode(err) == 0 {
			t.Fatalf("UART offset %d: %v", off, err)
		}
		src := d.DeviceID() + "/rpc-resp/t"
		r := mqttFrame(t, b.Addr(), d.DeviceID(), src+"/rpc", fmt.Sprintf(`{"id":1,"src":%q,"method":"FS.Put","params":{"filename":"v","offset":%d,"data":"QQ=="}}`, src, off), 5*time.Second)
		if !bytes.Contains(r, []byte(`"error"`)) {
			t.Fatalf("MQTT offset %d: %s", off, r)
		}
	}
	var got struct{ Data string }
	json.Unmarshal(call(t, u, "FS.Get", map[string]any{"filename": "v"}), &got)
	if got.Data != base64.StdEncoding.EncodeToString([]byte("hello")) || d.Crashes() != 0 {
		t.Fatalf("file %q, %d crashes", got.Data, d.Crashes())
	}
}

// TestConfigRanges: out-of-range values are refused by Config.Set; a state
// that already holds them boots with them clamped (and says so), MQTT
// included.
func TestConfigRanges(t *testing.T) {
	b := startBroker(t)
	d, con := startWatched(t, Options{MQTTBroker: b.Addr()})
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, v := range []string{`{"mqtt":{"keep_alive":-1}}`, `{"mqtt":{"keep_alive":9223372037}}`, `{"mqtt":{"keep_alive":65536}}`,
		`{"mqtt":{"reconnect_timeout_min":-1}}`, `{"rpc":{"max_frame_size":132000000}}`, `{"debug":{"level":99}}`} {
		_, err := c.Call(ctx, "Config.Set", json.RawMessage(`{"config":`+v+`}`))
		if rpcCode(err) != 400 || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("Config.Set %s: %v", v, err)
		}
	}
	if got := string(call(t, c, "Config.Get", map[string]any{"key": "mqtt.keep_alive"})); got != "60" {
		t.Fatalf("keep_alive changed to %s", got)
	}
	// A state written before the checks existed.
	conf := `{"mqtt":{"keep_alive":-1,"reconnect_timeout_min":0},"rpc":{"max_frame_size":132000000}}`
	call(t, c, "FS.Put", map[string]any{"filename": "conf9.json", "data": base64.StdEncoding.EncodeToString([]byte(conf))})
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	waitRPCOverMQTT(t, b.Addr(), d)
	c = dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	if got := string(call(t, c, "Config.Get", map[string]any{"key": "mqtt.keep_alive"})); got != "0" {
		t.Fatalf("keep_alive -1 loaded as %s", got)
	}
	if got := string(call(t, c, "Config.Get", map[string]any{"key": "rpc.max_frame_size"})); got != "262144" {
		t.Fatalf("max_frame_size loaded as %s", got)
	}
	if !strings.Contains(con.String(), "conf9.json: [mqtt.keep_alive] out of range: -1, using 0") {
		t.Fatalf("clamping not logged:\n%s", con.String())
	}
	if r, err := mosCall(t, b.Addr(), d.DeviceID(), "RPC.Ping"); err != nil {
		t.Fatalf("MQTT after clamped boot: %s %v", r, err)
	}
}

// TestMQTTBadSrcKeepsTheChannel: a request whose src cannot be a topic
// (wildcards, NUL) is dropped; the device's MQTT session stays up and
// answers the next request.
func TestMQTTBadSrcKeepsTheChannel(t *testing.T) {
	b := startBroker(t)
	d, con := startWatched(t, Options{MQTTBroker: b.Addr()})
	waitRPCOverMQTT(t, b.Addr(), d)
	for _, src := range []string{"#", "+", "a/#", "x/+/y", "a\u0000b", "", strings.Repeat("x", 70000)} {
		frame, _ := json.Marshal(map[string]any{"id": 1, "src": src, "method": "RPC.Ping"})
		mqttFrame(t, b.Addr(), d.DeviceID(), "", string(frame), 0)
	}
	time.Sleep(300 * time.Millisecond)
	if r, err := mosCall(t, b.Addr(), d.DeviceID(), "RPC.Ping"); err != nil {
		t.Fatalf("after bad src: %s %v", r, err)
	}
	if strings.Contains(con.String(), "MQTT0 Disconnect") {
		t.Fatalf("the broker dropped the device:\n%s", con.String())
	}
}

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }

// protectWithAuth sets an htdigest file (joe/secret, realm myproduct) and
// an ACL letting joe call everything.
func protectWithAuth(t *testing.T, c *client.Client) {
	t.Helper()
	call(t, c, "FS.Put", map[string]any{"filename": "pw", "data": base64.StdEncoding.EncodeToString([]byte("joe:myproduct:" + md5hex("joe:myproduct:secret") + "\n"))})
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"auth_domain": "myproduct", "auth_file": "pw",
		"acl": `[{"method":"*","acl":"+joe"}]`}}})
}

// TestDigestBoundToRequestURI: an Authorization header captured for
// POST /rpc/FS.List is refused on POST /rpc/FS.Remove, with or without its
// uri= edited.
func TestDigestBoundToRequestURI(t *testing.T) {
	d, _ := startWatched(t, Options{})
	protectWithAuth(t, dial(t, "ws://"+d.HTTPAddr()+"/rpc"))
	base := "http://" + d.HTTPAddr()
	post := func(path, authz string) (int, string) {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(`{"filename":"pw"}`))
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, r.Header.Get("WWW-Authenticate") + string(b)
	}
	code, ch := post("/rpc/FS.List", "")
	m := regexp.MustCompile(`nonce="([0-9a-f]+)"`).FindStringSubmatch(ch)
	if code != 401 || m == nil {
		t.Fatalf("challenge: %d %q", code, ch)
	}
	header := func(uri string) string {
		resp := md5hex(md5hex("joe:myproduct:secret") + ":" + m[1] + ":00000001:c1:auth:" + md5hex("POST:/rpc/FS.List"))
		return fmt.Sprintf(`Digest username="joe", realm="myproduct", nonce="%s", uri="%s", qop=auth, nc=00000001, cnonce="c1", response="%s"`, m[1], uri, resp)
	}
	if code, body := post("/rpc/FS.List", header("/rpc/FS.List")); code != 200 {
		t.Fatalf("genuine header: %d %s", code, body)
	}
	for _, uri := range []string{"/rpc/FS.List", "/rpc/FS.Remove"} {
		if code, body := post("/rpc/FS.Remove", header(uri)); code != 401 {
			t.Fatalf("header for FS.List (uri=%s) on FS.Remove: %d %s", uri, code, body)
		}
	}
	if code, _ := post("/rpc/FS.List?x=1", header("/rpc/FS.List")); code != 401 {
		t.Fatalf("header for /rpc/FS.List accepted with a query added: %d", code)
	}
}

// TestConfigSetLowerLevel: Config.Set at level 1-8 obeys the running
// conf_acl and changes only that level's file, not the running config.
func TestConfigSetLowerLevel(t *testing.T) {
	d, con := startWatched(t, Options{})
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"conf_acl": "-rpc.acl_file,*"}})
	for _, level := range []int{9, 7} {
		call(t, c, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"acl_file": "mine.json"}, "debug": map[string]any{"level": 3}},
			"level": level, "save": level == 7})
	}
	if got := string(call(t, c, "Config.Get", map[string]any{"key": "rpc.acl_file"})); got != `""` {
		t.Fatalf("running rpc.acl_file = %s", got)
	}
	var f struct{ Data string }
	json.Unmarshal(call(t, c, "FS.Get", map[string]any{"filename": "conf7.json"}), &f)
	conf7, _ := base64.StdEncoding.DecodeString(f.Data)
	if bytes.Contains(conf7, []byte("acl_file")) || !bytes.Contains(conf7, []byte(`"level": 3`)) {
		t.Fatalf("conf7.json:\n%s", conf7)
	}
	if strings.Count(con.String(), "Not allowed to set [rpc.acl_file]") != 2 {
		t.Fatalf("refusals not logged:\n%s", con.String())
	}
	// Level 9 applied debug.level at once; level 7 alone would not have.
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"sys": map[string]any{"wdt_timeout": 5}}, "level": 7, "save": true})
	if got := string(call(t, c, "Config.Get", map[string]any{"key": "sys.wdt_timeout"})); got != "30" {
		t.Fatalf("level 7 changed the running config: wdt_timeout %s", got)
	}
	if got := string(call(t, c, "Config.Get", map[string]any{"key": "sys.wdt_timeout", "level": 7})); got != "5" {
		t.Fatalf("level 7 file: wdt_timeout %s", got)
	}
}

// TestRebootRequestsCoalesce: five Sys.Reboot calls reboot the device once.
func TestRebootRequestsCoalesce(t *testing.T) {
	d, con := startWatched(t, Options{})
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "Sys.Reboot", json.RawMessage(`{"delay_ms":9223372036854775807}`)); rpcCode(err) != 400 {
		t.Fatalf("delay_ms overflowing the timer: %v", err)
	}
	for i := 0; i < 5; i++ {
		call(t, c, "Sys.Reboot", map[string]any{"delay_ms": 300 + 100*i})
	}
	time.Sleep(1500 * time.Millisecond)
	if n := strings.Count(con.String(), "Init done"); n != 2 {
		t.Fatalf("%d boots, want 2 (one reboot)", n)
	}
}

// TestPeerStringsAreEscaped: a method name cannot forge a log line or
// reach the terminal with escape sequences; logins are not findings,
// refused passwords are.
func TestPeerStringsAreEscaped(t *testing.T) {
	d, con := startWatched(t, Options{})
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.Call(ctx, "X\nmg_rpc.c:1             forged finding=denied\x1b[2J", nil)
	out := con.String()
	if strings.Contains(out, "\nmg_rpc.c:1 ") || strings.ContainsRune(out, 0x1b) || !strings.Contains(out, `X\nmg_rpc.c:1`) {
		t.Fatalf("raw peer string in the log:\n%q", out)
	}
	protectWithAuth(t, c)
	before := len(con.String())
	good, err := client.Dial(ctx, "http://"+d.HTTPAddr()+"/rpc", client.WithCredentials("joe", "secret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := good.Call(ctx, "FS.List", nil); err != nil {
		t.Fatal(err)
	}
	if s := con.String()[before:]; strings.Contains(s, "finding=") {
		t.Fatalf("a successful login logged a finding:\n%s", s)
	}
	bad, _ := client.Dial(ctx, "http://"+d.HTTPAddr()+"/rpc", client.WithCredentials("joe", "wrong"))
	bad.Call(ctx, "FS.List", nil)
	if !strings.Contains(con.String(), "finding=bad password") {
		t.Fatal("a refused password is not a finding")
	}
}

// TestInputLimits: NUL in file names, ATCA slot numbers that would wrap,
// rpc.max_non_persistent_channels.
func TestInputLimits(t *testing.T) {
	d, _ := startWatched(t, Options{})
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, m := range []struct{ method, params string }{
		{"FS.Put", `{"filename":"rpc_auth.txt\u0000.jpg","data":"QQ=="}`},
		{"FS.Get", `{"filename":"a\u0000b"}`},
		{"FS.Rename", `{"src":"a","dst":"b\u0000"}`},
	} {
		if _, err := c.Call(ctx, m.method, json.RawMessage(m.params)); rpcCode(err) != 400 {
			t.Errorf("%s %s: %v", m.method, m.params, err)
		}
	}
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"sys": map[string]any{"atca": map[string]any{"enable": true}}, "i2c": map[string]any{"enable": true}}, "save": true, "reboot": true})
	time.Sleep(800 * time.Millisecond)
	c = dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	for _, slot := range []int{-65536, 65536, 16, -1} {
		if _, err := c.Call(ctx, "ATCA.GetPubKey", map[string]any{"slot": slot}); rpcCode(err) != 400 {
			t.Errorf("ATCA.GetPubKey slot %d: %v", slot, err)
		}
	}
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"max_non_persistent_channels": 2}}})
	second := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	if _, err := client.Dial(ctx, "ws://"+d.HTTPAddr()+"/rpc"); err == nil {
		t.Fatal("a third channel was accepted")
	}
	second.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		third, err := client.Dial(ctx, "ws://"+d.HTTPAddr()+"/rpc")
		if err == nil {
			call(t, third, "RPC.Ping", nil)
			third.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no channel after one closed: %v", err)
		}
	}
}

// TestSupervisorCoversHTTPAndTimers: a panic in an HTTP handler or a timer
// callback running for the device is its crash (report, count, reboot),
// and the process carries on.
func TestSupervisorCoversHTTPAndTimers(t *testing.T) {
	d, con := startWatched(t, Options{})
	srv := httptest.NewServer(d.protectHTTP(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("handler bug") })))
	defer srv.Close()
	if r, err := http.Get(srv.URL + "/x"); err == nil {
		r.Body.Close()
		t.Fatalf("crashing handler answered %d", r.StatusCode)
	}
	waitBoots := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); strings.Count(con.String(), "Init done") < n; {
			if time.Now().After(deadline) {
				t.Fatalf("no reboot %d:\n%s", n, con.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitBoots(2)
	time.AfterFunc(10*time.Millisecond, func() { d.protect("timer", func() { panic("timer bug") }) })
	waitBoots(3)
	if d.Crashes() != 2 || !strings.Contains(con.String(), "Go panic in HTTP GET /x: handler bug") || !strings.Contains(con.String(), "Go panic in timer: timer bug") {
		t.Fatalf("%d crashes:\n%s", d.Crashes(), con.String())
	}
	call(t, dial(t, "ws://"+d.HTTPAddr()+"/rpc"), "RPC.Ping", nil)
}

// TestMQTTFloodIsBounded: requests beyond rpc.max_queue_length handled at
// once are dropped, not queued without end; a device.id that cannot be a
// topic turns RPC over MQTT off instead of wedging the session.
func TestMQTTFloodIsBounded(t *testing.T) {
	b := startBroker(t)
	release := make(chan struct{})
	var running atomic.Int64
	d, con := startWatched(t, Options{MQTTBroker: b.Addr(), Services: func(r rpc.Registrar) {
		r.Register("Test.Block", "", func(context.Context, *rpc.Request) (json.RawMessage, error) {
			running.Add(1)
			<-release
			return nil, nil
		})
	}})
	waitRPCOverMQTT(t, b.Addr(), d)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("flood"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(50)
	for i := 0; i < 40; i++ {
		c.Publish(d.DeviceID()+"/rpc", 1, false, fmt.Sprintf(`{"id":%d,"src":"flood","method":"Test.Block"}`, i+1)).Wait()
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(con.String(), "MQTT RPC queue full") || running.Load() < 25; {
		if time.Now().After(deadline) {
			t.Fatalf("%d running, console:\n%s", running.Load(), tail(con.String(), 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if n := running.Load(); n != 25 {
		t.Fatalf("%d requests handled at once, want 25 (rpc.max_queue_length)", n)
	}
	close(release)

	call(t, dial(t, "ws://"+d.HTTPAddr()+"/rpc"), "Config.Set", map[string]any{"config": map[string]any{"device": map[string]any{"id": "dev/#"}}, "save": true})
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	waitMQTT(t, d, true)
	time.Sleep(300 * time.Millisecond)
	if out := con.String(); !strings.Contains(out, `device.id "dev/#" is not a valid topic`) || strings.Contains(out, "MQTT0 Disconnect") {
		t.Fatalf("console:\n%s", tail(out, 2000))
	}
}

// TestRebootAfterAnotherReboot: a reboot asked for before the device
// rebooted for another reason is forgotten, and one asked for afterwards
// happens.
func TestRebootAfterAnotherReboot(t *testing.T) {
	d, con := startWatched(t, Options{})
	d.ScheduleReboot(time.Hour)
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	d.ScheduleReboot(200 * time.Millisecond)
	for deadline := time.Now().Add(5 * time.Second); strings.Count(con.String(), "Init done") < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("the second reboot request was lost:\n%s", con.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// panicSigner is a key whose signing code has a bug.
type panicSigner struct{ crypto.Signer }

func (panicSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { panic("signer bug") }

// TestSupervisorCoversTLSCallbacks: device code that runs inside TLS
// handshakes (a key in the ATECC, the on-demand CA check) fails the
// handshake and crashes the device when it panics, never the process.
func TestSupervisorCoversTLSCallbacks(t *testing.T) {
	d, con := startWatched(t, Options{})
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &srvKey.PublicKey, srvKey)
	c1, c2 := net.Pipe()
	go tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: srvKey}}}).Handshake()
	cli := tls12.Client(c2, &tls12.Config{Protect: d.protect, VerifyPeerCertificate: func([][]byte) ([]*x509.Certificate, error) { panic("verifier bug") }})
	if err := cli.Handshake(); err == nil {
		t.Fatal("a crashed verification passed")
	}
	c1.Close()
	if _, err := (supervisedSigner{s: panicSigner{}, d: d}).Sign(nil, make([]byte, 32), crypto.SHA256); err == nil {
		t.Fatal("a crashed signature passed")
	}
	if d.Crashes() != 2 || !strings.Contains(con.String(), "Go panic in TLS signature: signer bug") {
		t.Fatalf("%d crashes:\n%s", d.Crashes(), con.String())
	}
}
