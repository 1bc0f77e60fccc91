package mqtt

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Broker is an embedded MQTT broker on a local address. In-process clients
// (the devices of a fleet) reach it through Dial without a socket.
type Broker struct {
	srv  *mochi.Server
	addr string
	tcp  net.Listener
	pipe *pipeListener
}

// BrokerOptions configure StartBrokerWith.
type BrokerOptions struct {
	// TLS, when not nil, serves MQTT over TLS on the host address.
	TLS *tls.Config
	// User and Pass, when User is set, are the only credentials the broker
	// accepts (CONNACK 5, not authorized, for anything else); empty accepts
	// every client.
	User, Pass string
}

// StartBroker listens on addr ("127.0.0.1:1883", port 0 picks one), with
// TLS when tc is not nil, and accepts every client.
func StartBroker(addr string, tc *tls.Config) (*Broker, error) {
	return StartBrokerWith(addr, BrokerOptions{TLS: tc})
}

// StartBrokerWith listens on addr with the given options.
func StartBrokerWith(addr string, o BrokerOptions) (*Broker, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if o.TLS != nil {
		l = tls.NewListener(l, o.TLS)
	}
	caps := mochi.NewDefaultServerCapabilities()
	// Each client's queue of pending writes is allocated whole: mochi's 8192
	// slots cost 64 KiB per device of a fleet; 1024 leave a back end
	// subscribed to a fleet's telemetry room for bursts.
	caps.MaximumClientWritesPending = 1024
	// Each client's read buffer is held for the life of its connection:
	// mochi's 2 KiB cost a fleet 2 KiB per device. A device's packets come
	// one write at a time through its pipe, and a packet larger than the
	// buffer is read straight into place, so 512 bytes lose nothing.
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler), InlineClient: false, Capabilities: caps, ClientNetReadBufferSize: 512})
	var hook mochi.Hook = new(auth.AllowHook)
	if o.User != "" {
		hook = &credentialsHook{user: []byte(o.User), pass: []byte(o.Pass)}
	}
	if err := srv.AddHook(hook, nil); err != nil {
		l.Close()
		return nil, err
	}
	if err := srv.AddListener(listeners.NewNet("mosemu", l)); err != nil {
		l.Close()
		return nil, err
	}
	pipe := newPipeListener("mosemu-inproc")
	if err := srv.AddListener(pipe); err != nil {
		l.Close()
		return nil, err
	}
	go srv.Serve()
	return &Broker{srv: srv, addr: l.Addr().String(), tcp: l, pipe: pipe}, nil
}

// Addr returns the broker's host:port.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker and drops its clients.
//
// mochi's own Close lists each listener's clients under a read lock that it
// takes twice, and deadlocks if a client leaving at that moment asks for
// the write lock in between: with thousands of clients leaving at once
// (a fleet stopping) that is certain. So the clients go first: no new ones,
// every connected one stopped, and mochi closes an empty server.
func (b *Broker) Close() error {
	b.tcp.Close()
	b.pipe.shut()
	for _, cl := range b.srv.Clients.GetAll() {
		cl.Stop(errors.New("broker closing"))
	}
	for deadline := time.Now().Add(time.Second); b.srv.Clients.Len() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	return b.srv.Close()
}

// credentialsHook accepts one user name and password.
type credentialsHook struct {
	mochi.HookBase
	user, pass []byte
}

func (h *credentialsHook) ID() string { return "mosemu-credentials" }

func (h *credentialsHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (h *credentialsHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	return bytes.Equal(pk.Connect.Username, h.user) && bytes.Equal(pk.Connect.Password, h.pass)
}

func (h *credentialsHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }
