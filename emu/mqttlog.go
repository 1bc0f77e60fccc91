package emu

import (
	"fmt"
	"sync"
	"time"

	"github.com/mosemu/mosemu/mqtt"
)

// mqttLog is the console over MQTT (debug.stdout_topic/stderr_topic of the
// mqtt library): every log line the firmware writes to stderr (where LOG
// goes) is published at QoS 0 as "<device.id> <seq> <time> <fd>|<line>",
// the format `mos console --port mqtt://broker/<prefix>` shows from
// <prefix>/log. Lines are queued and dropped when the queue is full or the
// session is down, as the firmware drops them beyond its unsent-bytes cap.
type mqttLog struct {
	mu    sync.Mutex
	queue chan logMsg // nil when forwarding is off
	devID string
	topic string
	seq   uint32
	// protect runs the forwarder under the device's supervisor.
	protect func(where string, f func())
}

type logMsg struct {
	topic   string
	payload []byte
}

// WriteLog implements console.Sink.
func (l *mqttLog) WriteLog(line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.queue == nil || l.topic == "" {
		return
	}
	t := float64(time.Now().UnixMilli()) / 1000
	msg := logMsg{l.topic, fmt.Appendf(nil, "%s %d %.3f 2|%s", l.devID, l.seq, t, line)}
	l.seq++
	select {
	case l.queue <- msg:
	default:
	}
}

// start forwards to c until the returned stop is called.
func (l *mqttLog) start(c *mqtt.Client, devID, stderrTopic string) (stop func()) {
	q := make(chan logMsg, 256)
	done := make(chan struct{})
	l.mu.Lock()
	l.queue, l.devID, l.topic = q, devID, stderrTopic
	l.mu.Unlock()
	go l.protect("console over MQTT", func() {
		for {
			select {
			case m := <-q:
				c.PublishNoWait(m.topic, 0, false, m.payload)
			case <-done:
				return
			}
		}
	})
	return func() {
		l.mu.Lock()
		l.queue = nil
		l.mu.Unlock()
		close(done)
	}
}
