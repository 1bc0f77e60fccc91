package mqtt

import (
	"crypto/tls"
	"log/slog"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Broker is an embedded MQTT broker on a local address.
type Broker struct {
	srv  *mochi.Server
	addr string
}

// StartBroker listens on addr ("127.0.0.1:1883", port 0 picks one), with
// TLS when tc is not nil, and accepts every client.
func StartBroker(addr string, tc *tls.Config) (*Broker, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		l = tls.NewListener(l, tc)
	}
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler), InlineClient: false})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		l.Close()
		return nil, err
	}
	if err := srv.AddListener(listeners.NewNet("mosemu", l)); err != nil {
		l.Close()
		return nil, err
	}
	go srv.Serve()
	return &Broker{srv: srv, addr: l.Addr().String()}, nil
}

// Addr returns the broker's host:port.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker and drops its clients.
func (b *Broker) Close() error { return b.srv.Close() }
