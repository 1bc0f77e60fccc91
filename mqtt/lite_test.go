package mqtt

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestTopicMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false},
		{"a/#", "a/b/c", true}, {"a/#", "a", true}, {"#", "x/y", true}, {"+/rpc", "esp32_000001/rpc", true},
		{"+/rpc", "esp32_000001/rpc/x", false}, {"a/b/c", "a/b", false}, {"a/+/c", "a//c", true},
	} {
		if got := topicMatches(tc.filter, tc.topic); got != tc.want {
			t.Errorf("topicMatches(%q, %q) = %v", tc.filter, tc.topic, got)
		}
	}
}

// liteOn returns a lite client of the broker: through the in-process pipe,
// or over TCP.
func liteOn(t *testing.T, b *Broker, id string, pipe bool, edit func(*paho.ClientOptions)) *liteClient {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(id).SetKeepAlive(30 * time.Second).
		SetConnectRetryInterval(50 * time.Millisecond).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectTimeout(5 * time.Second)
	if pipe {
		o.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) { return b.Dial() })
	}
	if edit != nil {
		edit(o)
	}
	c := newLiteClient(o)
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func waitToken(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v", what, tok.Error())
	}
}

// TestLiteClientQoSAndReconnect exchanges QoS 0, 1 and 2 messages between
// a lite client on the in-process pipe and a paho client on TCP, then has
// the broker drop the lite client and checks it reconnects and resubscribes.
func TestLiteClientQoSAndReconnect(t *testing.T) {
	b, err := StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := make(chan string, 16)
	connects := make(chan bool, 4)
	dev := liteOn(t, b, "dev1", true, func(o *paho.ClientOptions) {
		o.SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe("dev1/in/#", 2, func(_ paho.Client, m paho.Message) { got <- fmt.Sprintf("%s %d %s", m.Topic(), m.Qos(), m.Payload()) })
			connects <- true
		})
	})
	waitToken(t, dev.Connect(), "lite connect")
	<-connects
	host := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("host"))
	waitToken(t, host.Connect(), "host connect")
	defer host.Disconnect(0)
	fromDev := make(chan string, 16)
	waitToken(t, host.Subscribe("dev1/out", 2, func(_ paho.Client, m paho.Message) { fromDev <- fmt.Sprintf("%d %s", m.Qos(), m.Payload()) }), "host subscribe")
	time.Sleep(100 * time.Millisecond) // the device's SUBSCRIBE is on its way
	for q := byte(0); q <= 2; q++ {
		waitToken(t, dev.Publish("dev1/out", q, false, fmt.Sprintf("up%d", q)), "lite publish")
		waitToken(t, host.Publish(fmt.Sprintf("dev1/in/%d", q), q, false, fmt.Sprintf("down%d", q)), "host publish")
	}
	want := map[string]bool{"0 up0": true, "1 up1": true, "2 up2": true, "dev1/in/0 0 down0": true, "dev1/in/1 1 down1": true, "dev1/in/2 2 down2": true}
	for range 6 {
		select {
		case s := <-fromDev:
			delete(want, s)
		case s := <-got:
			delete(want, s)
		case <-time.After(10 * time.Second):
			t.Fatalf("missing %v", want)
		}
	}
	if len(want) != 0 {
		t.Fatalf("missing %v", want)
	}
	if !b.Disconnect("dev1") {
		t.Fatal("broker did not know dev1")
	}
	select {
	case <-connects:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect after a broker-side disconnect")
	}
	time.Sleep(100 * time.Millisecond)
	waitToken(t, host.Publish("dev1/in/again", 1, false, "x"), "host publish")
	select {
	case s := <-got:
		if s != "dev1/in/again 1 x" {
			t.Fatal(s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery after the reconnect")
	}
}

func TestLiteClientRefusedAndWill(t *testing.T) {
	b, err := StartBrokerWith("127.0.0.1:0", BrokerOptions{User: "u", Pass: "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bad := liteOn(t, b, "bad", false, func(o *paho.ClientOptions) { o.SetUsername("u").SetPassword("nope") })
	if err := bad.dial(); err == nil || !strings.Contains(err.Error(), "CONNACK 5") {
		t.Fatalf("wrong password: %v", err)
	}
	if bad.Publish("x", 0, false, "y").Error() == nil {
		t.Fatal("publish without a session succeeded")
	}
	host := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("host").SetUsername("u").SetPassword("p"))
	waitToken(t, host.Connect(), "host connect")
	defer host.Disconnect(0)
	wills := make(chan string, 1)
	waitToken(t, host.Subscribe("will", 0, func(_ paho.Client, m paho.Message) { wills <- string(m.Payload()) }), "subscribe")
	good := liteOn(t, b, "good", false, func(o *paho.ClientOptions) {
		o.SetUsername("u").SetPassword("p").SetWill("will", "gone", 0, false)
	})
	waitToken(t, good.Connect(), "connect")
	good.mu.Lock()
	conn := good.conn
	good.mu.Unlock()
	conn.Close() // a network failure, no DISCONNECT: the broker sends the will
	select {
	case w := <-wills:
		if w != "gone" {
			t.Fatal(w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no will after a lost connection")
	}
}

// FuzzLiteClientStream feeds the client arbitrary bytes from the broker
// after a CONNACK: it must neither panic nor hang, and it ends the
// connection on garbage.
func FuzzLiteClientStream(f *testing.F) {
	for _, s := range [][]byte{
		{0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'},             // PUBLISH QoS 0
		{0x32, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, 'h', 'i'}, // PUBLISH QoS 1
		{0x34, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x02, 'h', 'i'}, // PUBLISH QoS 2
		{0x36, 0x05, 0x00, 0x01, 'x', 0x00, 0x01},                     // PUBLISH with QoS 3
		{0x62, 0x02, 0x00, 0x01, 0x40, 0x02, 0x00, 0x07, 0xd0, 0x00},  // PUBREL, PUBACK, PINGRESP
		{0x90, 0x03, 0x00, 0x01, 0x80, 0xb0, 0x02, 0x00, 0x01},        // SUBACK refused, UNSUBACK
		{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f},                          // bad remaining length
		{0x20, 0x02, 0x00, 0x00},                                      // a second CONNACK
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		cli, srv := net.Pipe()
		o := paho.NewClientOptions().AddBroker("tcp://fuzz:1883").SetClientID("fuzz").SetConnectTimeout(time.Second).
			SetConnectRetryInterval(time.Hour)
		o.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) { return cli, nil })
		o.SetDefaultPublishHandler(func(paho.Client, paho.Message) {})
		c := newLiteClient(o)
		done := make(chan struct{})
		go func() { // the broker: read CONNECT, answer, then the stream
			defer close(done)
			buf := make([]byte, 256)
			srv.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := srv.Read(buf); err != nil {
				return
			}
			srv.Write([]byte{0x20, 0x02, 0x00, 0x00})
			go io.Copy(io.Discard, srv) // the client's acks
			srv.Write(stream)
			srv.Close()
		}()
		if err := c.dial(); err != nil {
			t.Fatal(err)
		}
		c.Subscribe("a/#", 1, nil)
		c.Publish("t", 1, false, "x")
		<-done
		c.Disconnect(0)
	})
}
