package mqtt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Probe reports whether an MQTT 3.1.1 broker that accepts anonymous clients
// answers at addr: it connects, sends a CONNECT with a throwaway client id
// and a clean session, and expects a CONNACK with return code 0, then
// disconnects.
func Probe(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	id := fmt.Sprintf("mosemu-probe-%d", time.Now().UnixNano()%1e9)
	var vh bytes.Buffer
	vh.Write([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 10}) // protocol 3.1.1, clean session, keep-alive 10 s
	vh.Write([]byte{byte(len(id) >> 8), byte(len(id))})
	vh.WriteString(id)
	pkt := append([]byte{0x10, byte(vh.Len())}, vh.Bytes()...)
	if _, err := c.Write(pkt); err != nil {
		return err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fmt.Errorf("no CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		return errors.New("not an MQTT broker (no CONNACK)")
	}
	if ack[3] != 0 {
		return fmt.Errorf("MQTT broker refused an anonymous client (CONNACK return code %d)", ack[3])
	}
	c.Write([]byte{0xE0, 0}) // DISCONNECT
	return nil
}
