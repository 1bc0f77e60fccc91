package emu

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/mqtt"
	"github.com/mosemu/mosemu/rpc/client"
)

// mosCall does what `mos --port mqtt://broker/<id> call <method>` does:
// subscribe to <id>/rpc-resp/<clientid>/rpc, publish the frame to <id>/rpc
// with dst = id and src = <id>/rpc-resp/<clientid>.
func mosCall(t *testing.T, broker, devID, method string) (json.RawMessage, error) {
	return mosCallAuth(t, broker, devID, method, "")
}

// mosCallAuth is mosCall with an optional in-frame "auth" object (JSON).
func mosCallAuth(t *testing.T, broker, devID, method, auth string) (json.RawMessage, error) {
	t.Helper()
	cid := fmt.Sprintf("mos-%d", time.Now().UnixNano()%1e9)
	src := devID + "/rpc-resp/" + cid
	frame := fmt.Sprintf(`{"src":%q,"dst":%q,"id":1234567890123,"method":%q}`, src, devID, method)
	if auth != "" {
		frame = frame[:len(frame)-1] + `,"auth":` + auth + "}"
	}
	b, err := mqttRequest(broker, cid, devID, src+"/rpc", frame, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("no reply to %s", method)
	}
	var r struct {
		ID     int64           `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ID != 1234567890123 {
		return nil, fmt.Errorf("bad reply %s", b)
	}
	if r.Error != nil {
		return nil, fmt.Errorf("error %s", r.Error)
	}
	return r.Result, nil
}

// mqttRequest connects to broker as client cid, publishes frame to
// <devID>/rpc and returns the first message on replyTopic (when not
// empty), or nil after wait.
func mqttRequest(broker, cid, devID, replyTopic, frame string, wait time.Duration) ([]byte, error) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(cid))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(50)
	got := make(chan []byte, 1)
	if replyTopic != "" {
		c.Subscribe(replyTopic, 1, func(_ paho.Client, m paho.Message) {
			select {
			case got <- m.Payload():
			default:
			}
		}).Wait()
	}
	c.Publish(devID+"/rpc", 1, false, frame).Wait()
	select {
	case b := <-got:
		return b, nil
	case <-time.After(wait):
		return nil, nil
	}
}

func waitMQTT(t *testing.T, d *Device, up bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for d.MQTTConnected() != up {
		if time.Now().After(deadline) {
			t.Fatalf("MQTT connected never became %v", up)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRPCOverEmbeddedBrokerAndRestart(t *testing.T) {
	b, err := mqtt.StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	d, err := New(Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTBroker: addr, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Start(context.Background())
	waitMQTT(t, d, true)
	res, err := mosCall(t, addr, d.DeviceID(), "Sys.GetInfo")
	if err != nil || !strings.Contains(string(res), d.DeviceID()) {
		t.Fatalf("Sys.GetInfo over MQTT: %s %v", res, err)
	}
	// The broker restarts: the device reconnects and resubscribes.
	b.Close()
	waitMQTT(t, d, false)
	b2, err := mqtt.StartBroker(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	waitMQTT(t, d, true)
	time.Sleep(200 * time.Millisecond) // subscriptions follow CONNACK
	if res, err := mosCall(t, addr, d.DeviceID(), "RPC.Ping"); err != nil || string(res) != `{"channel_info": ""}` {
		t.Fatalf("after broker restart: %s %v", res, err)
	}
}

func TestRPCOverMosquitto(t *testing.T) {
	port := testkit.StartMosquitto(t, "")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	d, err := New(Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTBroker: addr, Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Start(context.Background())
	waitMQTT(t, d, true)
	time.Sleep(200 * time.Millisecond)
	if res, err := mosCall(t, addr, d.DeviceID(), "Sys.GetInfo"); err != nil || !strings.Contains(string(res), `"arch": "esp32"`) {
		t.Fatalf("Sys.GetInfo via mosquitto: %s %v", res, err)
	}
}

// TestMQTTChannelACL: an ACL entry for ch_type MQTT closes RPC over MQTT
// while other channels stay open.
func TestMQTTChannelACL(t *testing.T) {
	b, err := mqtt.StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d, err := New(Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTBroker: b.Addr(), Seed: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Start(context.Background())
	waitMQTT(t, d, true)
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"acl": `[{"ch_type":"MQTT","acl":"-*"},{"method":"*","acl":"*"}]`}}})
	if _, err := mosCall(t, b.Addr(), d.DeviceID(), "Sys.GetInfo"); err == nil || !strings.Contains(err.Error(), `"code":403`) {
		t.Fatalf("MQTT call with ch_type MQTT denied: %v", err)
	}
	call(t, c, "Sys.GetInfo", nil) // WS still allowed

	// Digest auth over MQTT: in-band 401, then the retry with "auth".
	ha1 := md5.Sum([]byte("joe:RPC:secret"))
	call(t, c, "FS.Put", map[string]any{"filename": "pw", "data": base64.StdEncoding.EncodeToString([]byte("joe:RPC:" + hex.EncodeToString(ha1[:])))})
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"auth_file": "pw", "acl": `[{"ch_type":"MQTT","acl":"joe"},{"method":"*","acl":"*"}]`}}})
	if _, err := mosCall(t, b.Addr(), d.DeviceID(), "RPC.Ping"); err == nil || !strings.Contains(err.Error(), `"code":401`) {
		t.Fatalf("MQTT call without credentials: %v", err)
	}
	fa := client.FrameDigest("RPC", "joe", "secret", time.Now().Unix(), "MD5")
	authJSON, _ := json.Marshal(fa)
	if res, err := mosCallAuth(t, b.Addr(), d.DeviceID(), "RPC.Ping", string(authJSON)); err != nil || string(res) != `{"channel_info": ""}` {
		t.Fatalf("MQTT call with digest auth: %s %v", res, err)
	}
}
