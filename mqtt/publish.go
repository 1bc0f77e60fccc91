package mqtt

// PublishNoWait queues a message without waiting for it to be sent, and
// drops it when the session is down (the firmware's log forwarding never
// blocks the code that logs).
func (m *Client) PublishNoWait(topic string, qos byte, retain bool, payload []byte) bool {
	if !m.Connected() {
		return false
	}
	m.c.Publish(topic, qos, retain, payload)
	return true
}
