package mqtt

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// liteClient is the device's MQTT 3.1.1 client. It runs like the firmware's
// mqtt library, as one event loop per connection: a single goroutine reads
// packets, writes happen in the caller under a lock, and the keep-alive and
// reconnect back-off are timers. A paho client costs ten goroutines and
// their buffers; a fleet of 10,000 devices cannot afford that.
//
// It implements the paho.Client interface with the options of a
// paho.ClientOptions, so that the rest of the package is written against
// one API. Handlers run on their own goroutine, as with paho's
// SetOrderMatters(false).
type liteClient struct {
	o paho.ClientOptions

	mu        sync.Mutex
	conn      net.Conn // nil while disconnected
	w         *bufio.Writer
	connected bool
	closed    bool
	lastSent  time.Time
	pingSent  time.Time // zero: no PINGREQ outstanding
	keepAlive *time.Timer
	retry     *time.Timer
	backoff   time.Duration
	nextID    uint16
	inflight  map[uint16]*liteToken // our QoS 1/2 publishes and subscriptions
	routes    map[string]paho.MessageHandler
	firstConn *liteToken // completes on the first CONNACK
	lastErr   error      // why the last attempt failed or the last connection ended
}

// LastError returns why the last connection attempt failed or the last
// connection ended, nil while connected or before any attempt.
func (c *liteClient) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connected {
		return nil
	}
	return c.lastErr
}

// errNotConnected is the error of a publish while the session is down.
var errNotConnected = errors.New("mqtt: not connected")

// newLiteClient returns a client for o (Servers, ClientID, credentials,
// will, KeepAlive, CleanSession, ConnectTimeout, ConnectRetryInterval,
// MaxReconnectInterval, CustomOpenConnectionFn and the handlers).
func newLiteClient(o *paho.ClientOptions) *liteClient {
	return &liteClient{o: *o, inflight: map[uint16]*liteToken{},
		routes: map[string]paho.MessageHandler{}, firstConn: newLiteToken()}
}

// liteToken is a paho.Token.
type liteToken struct {
	once sync.Once
	done chan struct{}
	err  error
	next byte // for a QoS 2 publish: the packet awaited next
}

func newLiteToken() *liteToken { return &liteToken{done: make(chan struct{})} }

func doneToken(err error) *liteToken {
	t := newLiteToken()
	t.complete(err)
	return t
}

func (t *liteToken) complete(err error) {
	t.once.Do(func() { t.err = err; close(t.done) })
}

func (t *liteToken) Wait() bool { <-t.done; return true }
func (t *liteToken) WaitTimeout(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-t.done:
		return true
	case <-tm.C:
		return false
	}
}
func (t *liteToken) Done() <-chan struct{} { return t.done }
func (t *liteToken) Error() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// liteMessage is a received PUBLISH.
type liteMessage struct{ p *packets.PublishPacket }

func (m liteMessage) Duplicate() bool   { return m.p.Dup }
func (m liteMessage) Qos() byte         { return m.p.Qos }
func (m liteMessage) Retained() bool    { return m.p.Retain }
func (m liteMessage) Topic() string     { return m.p.TopicName }
func (m liteMessage) MessageID() uint16 { return m.p.MessageID }
func (m liteMessage) Payload() []byte   { return m.p.Payload }
func (m liteMessage) Ack()              {}

func (c *liteClient) IsConnected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

func (c *liteClient) IsConnectionOpen() bool { return c.IsConnected() }

// OptionsReader reads the client's own copy of the options (the caller's
// copy is not kept: a fleet holds one per device).
func (c *liteClient) OptionsReader() paho.ClientOptionsReader { return paho.NewOptionsReader(&c.o) }

// Connect starts connecting in the background; the token completes on the
// first successful connection (attempts go on until then).
func (c *liteClient) Connect() paho.Token {
	go c.attempt()
	return c.firstConn
}

// attempt makes one connection attempt and schedules the next on failure.
func (c *liteClient) attempt() {
	c.mu.Lock()
	if c.closed || c.conn != nil {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	err := c.dial()
	if err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err
	if c.closed {
		return
	}
	c.scheduleLocked()
}

// scheduleLocked arms the reconnect timer with the back-off, doubling it
// from ConnectRetryInterval up to MaxReconnectInterval.
func (c *liteClient) scheduleLocked() {
	minD, maxD := c.o.ConnectRetryInterval, c.o.MaxReconnectInterval
	if minD <= 0 {
		minD = time.Second
	}
	if maxD < minD {
		maxD = minD
	}
	switch {
	case c.backoff == 0:
		c.backoff = minD
	default:
		c.backoff = min(2*c.backoff, maxD)
	}
	if c.retry != nil {
		c.retry.Stop()
	}
	c.retry = time.AfterFunc(c.backoff, func() {
		if h := c.o.OnReconnecting; h != nil {
			h(c, &c.o)
		}
		c.attempt()
	})
}

func (c *liteClient) dial() error {
	if len(c.o.Servers) == 0 {
		return errors.New("mqtt: no server")
	}
	u := c.o.Servers[0]
	var conn net.Conn
	var err error
	if c.o.CustomOpenConnectionFn != nil {
		conn, err = c.o.CustomOpenConnectionFn(u, c.o)
	} else {
		conn, err = net.DialTimeout("tcp", u.Host, c.o.ConnectTimeout)
	}
	if err != nil {
		return err
	}
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.ClientIdentifier = c.o.ClientID
	cp.CleanSession = c.o.CleanSession
	cp.Keepalive = uint16(c.o.KeepAlive)
	if c.o.Username != "" {
		cp.UsernameFlag, cp.Username = true, c.o.Username
	}
	if c.o.Password != "" {
		cp.PasswordFlag, cp.Password = true, []byte(c.o.Password)
	}
	if c.o.WillEnabled {
		cp.WillFlag, cp.WillTopic, cp.WillMessage = true, c.o.WillTopic, c.o.WillPayload
		cp.WillQos, cp.WillRetain = c.o.WillQos, c.o.WillRetained
	}
	timeout := c.o.ConnectTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	conn.SetDeadline(time.Now().Add(timeout))
	w := bufio.NewWriterSize(conn, 512)
	r := bufio.NewReaderSize(conn, 512)
	err = cp.Write(w)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("mqtt: sending CONNECT: %w", err)
	}
	pk, err := packets.ReadPacket(r)
	if err != nil {
		conn.Close()
		return fmt.Errorf("mqtt: waiting for CONNACK: %w", err)
	}
	ack, ok := pk.(*packets.ConnackPacket)
	if !ok {
		conn.Close()
		return fmt.Errorf("mqtt: %s instead of CONNACK", pk)
	}
	if ack.ReturnCode != packets.Accepted {
		conn.Close()
		return fmt.Errorf("mqtt: CONNACK %d: %s", ack.ReturnCode, packets.ConnackReturnCodes[ack.ReturnCode])
	}
	conn.SetDeadline(time.Time{})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return nil
	}
	c.conn, c.w, c.connected, c.backoff = conn, w, true, 0
	c.lastSent, c.pingSent = time.Now(), time.Time{}
	c.armKeepAliveLocked()
	c.mu.Unlock()
	c.firstConn.complete(nil)
	go c.readLoop(conn, r)
	if h := c.o.OnConnect; h != nil {
		go h(c)
	}
	return nil
}

// armKeepAliveLocked sends PINGREQ when nothing was sent for the keep-alive
// interval and drops the connection when the PINGRESP does not come within
// another interval.
func (c *liteClient) armKeepAliveLocked() {
	ka := time.Duration(c.o.KeepAlive) * time.Second
	if ka <= 0 {
		return
	}
	if c.keepAlive != nil {
		c.keepAlive.Stop()
	}
	conn := c.conn
	c.keepAlive = time.AfterFunc(ka/2, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.conn != conn || c.closed {
			return
		}
		now := time.Now()
		switch {
		case !c.pingSent.IsZero() && now.Sub(c.pingSent) > ka:
			conn.Close() // the reader reports the loss
			return
		case c.pingSent.IsZero() && now.Sub(c.lastSent) >= ka/2:
			if c.writeLocked(packets.NewControlPacket(packets.Pingreq)) == nil {
				c.pingSent = now
			}
		}
		c.keepAlive.Reset(ka / 2)
	})
}

// writeLocked writes one packet on the current connection.
func (c *liteClient) writeLocked(p packets.ControlPacket) error {
	if c.conn == nil {
		return errNotConnected
	}
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := p.Write(c.w)
	if err == nil {
		err = c.w.Flush()
	}
	if err != nil {
		c.conn.Close()
		return err
	}
	c.lastSent = time.Now()
	return nil
}

func (c *liteClient) readLoop(conn net.Conn, r *bufio.Reader) {
	var err error
	for {
		var pk packets.ControlPacket
		if pk, err = packets.ReadPacket(r); err != nil {
			break
		}
		// The reader never waits: over an in-process pipe (no socket
		// buffers) a reader blocked on an ack write or on a lock held by a
		// blocked writer would deadlock with the broker writing to us.
		// Acks may go out in any order; a PUBCOMP cannot overtake its
		// PUBREC's handling, which sends the PUBREL it answers.
		go c.handle(pk)
	}
	c.lost(conn, err)
}

func (c *liteClient) handle(pk packets.ControlPacket) {
	switch p := pk.(type) {
	case *packets.PublishPacket:
		switch p.Qos {
		case 1:
			ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
			ack.MessageID = p.MessageID
			c.mu.Lock()
			c.writeLocked(ack)
			c.mu.Unlock()
		case 2:
			rec := packets.NewControlPacket(packets.Pubrec).(*packets.PubrecPacket)
			rec.MessageID = p.MessageID
			c.mu.Lock()
			c.writeLocked(rec)
			c.mu.Unlock()
		}
		c.deliver(p)
	case *packets.PubrelPacket:
		comp := packets.NewControlPacket(packets.Pubcomp).(*packets.PubcompPacket)
		comp.MessageID = p.MessageID
		c.mu.Lock()
		c.writeLocked(comp)
		c.mu.Unlock()
	case *packets.PubackPacket:
		c.finish(p.MessageID, packets.Puback, nil)
	case *packets.PubrecPacket:
		rel := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
		rel.MessageID = p.MessageID
		c.mu.Lock()
		if t := c.inflight[p.MessageID]; t != nil {
			t.next = packets.Pubcomp
		}
		c.writeLocked(rel)
		c.mu.Unlock()
	case *packets.PubcompPacket:
		c.finish(p.MessageID, packets.Pubcomp, nil)
	case *packets.SubackPacket:
		var err error
		for _, code := range p.ReturnCodes {
			if code == 0x80 {
				err = errors.New("mqtt: subscription refused")
			}
		}
		c.finish(p.MessageID, packets.Suback, err)
	case *packets.UnsubackPacket:
		c.finish(p.MessageID, packets.Unsuback, nil)
	case *packets.PingrespPacket:
		c.mu.Lock()
		c.pingSent = time.Time{}
		c.mu.Unlock()
	}
}

// finish completes the token waiting for packet kind with this id.
func (c *liteClient) finish(id uint16, kind byte, err error) {
	c.mu.Lock()
	t := c.inflight[id]
	if t == nil || t.next != kind {
		c.mu.Unlock()
		return
	}
	delete(c.inflight, id)
	c.mu.Unlock()
	t.complete(err)
}

// deliver hands a message to the handler of the first matching route, or
// to the default handler.
func (c *liteClient) deliver(p *packets.PublishPacket) {
	c.mu.Lock()
	h := c.o.DefaultPublishHandler
	for filter, cb := range c.routes {
		if cb != nil && topicMatches(filter, p.TopicName) {
			h = cb
			break
		}
	}
	c.mu.Unlock()
	if h != nil {
		go h(c, liteMessage{p})
	}
}

// lost handles the end of a connection: pending operations fail, the
// handler hears of it and a reconnect is scheduled.
func (c *liteClient) lost(conn net.Conn, err error) {
	conn.Close()
	c.mu.Lock()
	if c.conn != conn {
		c.mu.Unlock()
		return
	}
	c.conn, c.w, c.connected = nil, nil, false
	c.lastErr = err
	if c.keepAlive != nil {
		c.keepAlive.Stop()
	}
	pending := c.inflight
	c.inflight = map[uint16]*liteToken{}
	closed := c.closed
	if !closed {
		c.scheduleLocked()
	}
	c.mu.Unlock()
	for _, t := range pending {
		t.complete(errors.New("mqtt: connection lost"))
	}
	if !closed && c.o.OnConnectionLost != nil {
		go c.o.OnConnectionLost(c, err)
	}
}

// Disconnect sends DISCONNECT, closes the connection and stops
// reconnecting. quiesce is not waited for: writes are synchronous.
func (c *liteClient) Disconnect(uint) {
	c.mu.Lock()
	c.closed = true
	if c.retry != nil {
		c.retry.Stop()
	}
	if c.keepAlive != nil {
		c.keepAlive.Stop()
	}
	conn := c.conn
	if conn != nil {
		c.writeLocked(packets.NewControlPacket(packets.Disconnect))
	}
	c.conn, c.w, c.connected = nil, nil, false
	pending := c.inflight
	c.inflight = map[uint16]*liteToken{}
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	for _, t := range pending {
		t.complete(errors.New("mqtt: disconnected"))
	}
	c.firstConn.complete(errors.New("mqtt: disconnected"))
}

// idLocked allocates a packet id for a token awaiting kind.
func (c *liteClient) idLocked(t *liteToken, kind byte) (uint16, error) {
	for range 1 << 16 {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if c.inflight[c.nextID] == nil {
			t.next = kind
			c.inflight[c.nextID] = t
			return c.nextID, nil
		}
	}
	return 0, errors.New("mqtt: no free packet id")
}

func (c *liteClient) Publish(topic string, qos byte, retained bool, payload any) paho.Token {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.Retain = topic, qos, retained
	switch v := payload.(type) {
	case []byte:
		p.Payload = v
	case string:
		p.Payload = []byte(v)
	default:
		return doneToken(fmt.Errorf("mqtt: unknown payload type %T", payload))
	}
	if qos > 2 {
		return doneToken(fmt.Errorf("mqtt: QoS %d", qos))
	}
	t := newLiteToken()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.connected {
		return doneToken(errNotConnected)
	}
	if qos > 0 {
		kind := byte(packets.Puback)
		if qos == 2 {
			kind = packets.Pubrec
		}
		id, err := c.idLocked(t, kind)
		if err != nil {
			return doneToken(err)
		}
		p.MessageID = id
	}
	if err := c.writeLocked(p); err != nil {
		delete(c.inflight, p.MessageID)
		return doneToken(err)
	}
	if qos == 0 {
		t.complete(nil)
	}
	return t
}

func (c *liteClient) Subscribe(topic string, qos byte, callback paho.MessageHandler) paho.Token {
	return c.SubscribeMultiple(map[string]byte{topic: qos}, callback)
}

func (c *liteClient) SubscribeMultiple(filters map[string]byte, callback paho.MessageHandler) paho.Token {
	p := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	for f, q := range filters {
		p.Topics = append(p.Topics, f)
		p.Qoss = append(p.Qoss, q)
	}
	t := newLiteToken()
	c.mu.Lock()
	defer c.mu.Unlock()
	for f := range filters {
		c.routes[f] = callback
	}
	return c.sendAckedLocked(t, p, packets.Suback, &p.MessageID)
}

func (c *liteClient) Unsubscribe(topics ...string) paho.Token {
	p := packets.NewControlPacket(packets.Unsubscribe).(*packets.UnsubscribePacket)
	p.Topics = topics
	t := newLiteToken()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range topics {
		delete(c.routes, f)
	}
	return c.sendAckedLocked(t, p, packets.Unsuback, &p.MessageID)
}

// sendAckedLocked sends p, which the broker acknowledges with an ack
// packet, under a fresh message id written to *msgID; t completes with the
// ack. c.mu must be held.
func (c *liteClient) sendAckedLocked(t *liteToken, p packets.ControlPacket, ack byte, msgID *uint16) paho.Token {
	if !c.connected {
		return doneToken(errNotConnected)
	}
	id, err := c.idLocked(t, ack)
	if err != nil {
		return doneToken(err)
	}
	*msgID = id
	if err := c.writeLocked(p); err != nil {
		delete(c.inflight, id)
		return doneToken(err)
	}
	return t
}

func (c *liteClient) AddRoute(topic string, callback paho.MessageHandler) {
	c.mu.Lock()
	c.routes[topic] = callback
	c.mu.Unlock()
}

// topicMatches reports whether topic matches the subscription filter
// (+ one level, # the rest).
func topicMatches(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, part := range f {
		switch {
		case part == "#":
			return true
		case i >= len(t):
			return false
		case part != "+" && part != t[i]:
			return false
		}
	}
	return len(f) == len(t)
}

var _ paho.Client = (*liteClient)(nil)

// LastError returns why the session is down: the last failed connection
// attempt or lost connection; nil while connected.
func (m *Client) LastError() error {
	if lc, ok := m.c.(*liteClient); ok {
		return lc.LastError()
	}
	return nil
}
