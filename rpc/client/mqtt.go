package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// mqttTransport calls a device through an MQTT broker, as mos does for
// mqtt://broker:port/device_id: requests go to <device_id>/rpc with src
// set to this client's id, replies come back on <src>/rpc.
type mqttTransport struct {
	c       paho.Client
	device  string
	src     string
	mu      sync.Mutex
	waiting map[int64]chan []byte
}

func dialMQTT(ctx context.Context, raw string, tc *tls.Config) (*mqttTransport, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("client: %q: %w", raw, err)
	}
	device := strings.Trim(u.Path, "/")
	if device == "" || strings.ContainsAny(device, "/+#") {
		return nil, fmt.Errorf("client: %q: want mqtt://broker:port/device_id", raw)
	}
	host := u.Host
	if u.Port() == "" {
		port := "1883"
		if u.Scheme == "mqtts" {
			port = "8883"
		}
		host += ":" + port
	}
	t := &mqttTransport{device: device, src: fmt.Sprintf("mos-%x", newID()), waiting: map[int64]chan []byte{}}
	scheme := "tcp://"
	o := paho.NewClientOptions().SetClientID(t.src).SetConnectTimeout(10 * time.Second).SetAutoReconnect(false).SetOrderMatters(false)
	if u.Scheme == "mqtts" {
		scheme = "ssl://"
		o.SetTLSConfig(tc)
	}
	if u.User != nil {
		p, _ := u.User.Password()
		o.SetUsername(u.User.Username()).SetPassword(p)
	}
	o.AddBroker(scheme + host)
	t.c = paho.NewClient(o)
	if err := wait(ctx, t.c.Connect()); err != nil {
		return nil, fmt.Errorf("client: connecting to %s: %w", host, err)
	}
	if err := wait(ctx, t.c.Subscribe(t.src+"/rpc", 1, t.onReply)); err != nil {
		t.c.Disconnect(0)
		return nil, fmt.Errorf("client: subscribing to %s/rpc: %w", t.src, err)
	}
	return t, nil
}

func wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *mqttTransport) onReply(_ paho.Client, m paho.Message) {
	var r struct {
		ID int64 `json:"id"`
	}
	if json.Unmarshal(m.Payload(), &r) != nil {
		return
	}
	t.mu.Lock()
	ch := t.waiting[r.ID]
	delete(t.waiting, r.ID)
	t.mu.Unlock()
	if ch != nil {
		ch <- m.Payload()
	}
}

func (t *mqttTransport) roundTrip(ctx context.Context, frame []byte, id int64) ([]byte, error) {
	var f map[string]json.RawMessage
	if err := json.Unmarshal(frame, &f); err != nil {
		return nil, err
	}
	f["src"], _ = json.Marshal(t.src)
	f["dst"], _ = json.Marshal(t.device)
	b, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	ch := make(chan []byte, 1)
	t.mu.Lock()
	t.waiting[id] = ch
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.waiting, id)
		t.mu.Unlock()
	}()
	if err := wait(ctx, t.c.Publish(t.device+"/rpc", 1, false, b)); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, errors.Join(fmt.Errorf("client: no reply from %s over MQTT", t.device), ctx.Err())
	}
}

func (t *mqttTransport) Close() error {
	t.c.Disconnect(50)
	return nil
}
