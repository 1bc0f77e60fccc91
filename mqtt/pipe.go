package mqtt

import (
	"errors"
	"log/slog"
	"net"
	"sync"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// ErrBrokerClosed is returned by Dial after the broker has stopped.
var ErrBrokerClosed = errors.New("mqtt: embedded broker closed")

// pipeListener is a mochi listener without a socket: each Dial hands one end
// of an in-memory pipe to the broker. A fleet of 10,000 devices then costs
// the broker no file descriptors and no loopback TCP buffers.
type pipeListener struct {
	id        string
	mu        sync.Mutex
	establish listeners.EstablishFn
	closed    bool
	ready     chan struct{} // closed once Serve (or Close) has run
	readyOnce sync.Once
}

func newPipeListener(id string) *pipeListener {
	return &pipeListener{id: id, ready: make(chan struct{})}
}

func (p *pipeListener) Init(*slog.Logger) error { return nil }
func (p *pipeListener) ID() string              { return p.id }
func (p *pipeListener) Address() string         { return "inproc" }
func (p *pipeListener) Protocol() string        { return "pipe" }

// Serve records the broker's connection handler; Dial uses it.
func (p *pipeListener) Serve(establish listeners.EstablishFn) {
	p.mu.Lock()
	p.establish = establish
	p.mu.Unlock()
	p.readyOnce.Do(func() { close(p.ready) })
}

// shut refuses new connections.
func (p *pipeListener) shut() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// Close stops new connections and closes the existing ones.
func (p *pipeListener) Close(closeClients listeners.CloseFn) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.readyOnce.Do(func() { close(p.ready) })
	closeClients(p.id)
}

func (p *pipeListener) dial() (net.Conn, error) {
	<-p.ready
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrBrokerClosed
	}
	client, server := net.Pipe()
	establish := p.establish
	go func() {
		establish(p.id, server) // returns when the client goes away
		server.Close()
	}()
	return client, nil
}

// Dial opens an in-process connection to the broker, as a TCP connection to
// Addr would, without a file descriptor.
func (b *Broker) Dial() (net.Conn, error) { return b.pipe.dial() }

// Disconnect drops the session of the client with this id from the broker
// side, as a broker restart or a load balancer would, and reports whether
// such a client was connected.
func (b *Broker) Disconnect(clientID string) bool {
	cl, ok := b.srv.Clients.Get(clientID)
	if !ok || cl.Closed() {
		return false
	}
	cl.Stop(errors.New("disconnected by mosemu"))
	return true
}

// BrokerStats are the broker's counters since it started.
type BrokerStats struct {
	Clients          int64 // connected now
	MessagesReceived int64 // PUBLISH packets received from clients
	MessagesSent     int64 // PUBLISH packets delivered to subscribers
}

// Stats returns the broker's counters.
func (b *Broker) Stats() BrokerStats {
	i := b.srv.Info.Clone()
	return BrokerStats{Clients: i.ClientsConnected, MessagesReceived: i.MessagesReceived, MessagesSent: i.MessagesSent}
}
