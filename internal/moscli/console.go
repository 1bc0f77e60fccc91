package moscli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// console does what mos console does until interrupted: over mqtt:// it
// subscribes to TOPIC/log and prints each message; on a serial port it
// prints what the device writes. It ignores the command's timeout.
func (c *cli) console(context.Context, cmdline) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	u, err := url.Parse(c.port)
	if err == nil && (u.Scheme == "mqtt" || u.Scheme == "mqtts") {
		return c.consoleMQTT(ctx, u)
	}
	if strings.Contains(c.port, "://") {
		return fmt.Errorf("console over %s is not supported by this stand-in (mqtt:// or a serial port)", c.port)
	}
	f, err := os.Open(c.port)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); f.Close() }()
	fmt.Fprintf(c.log, "Reading %s...\n", c.port)
	_, err = io.Copy(c.out, f)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (c *cli) consoleMQTT(ctx context.Context, u *url.URL) error {
	topic := strings.TrimPrefix(u.Path, "/") + "/log"
	scheme := "tcp://"
	if u.Scheme == "mqtts" {
		scheme = "ssl://"
	}
	o := paho.NewClientOptions().AddBroker(scheme + u.Host).SetClientID(fmt.Sprintf("mos-%d", time.Now().UnixNano()%1e9))
	if u.User != nil {
		pass, _ := u.User.Password()
		o.SetUsername(u.User.Username()).SetPassword(pass)
	}
	cl := paho.NewClient(o)
	fmt.Fprintf(c.log, "Connecting to %s...\n", u.Host)
	if t := cl.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("MQTT connect error: %v", t.Error())
	}
	defer cl.Disconnect(100)
	t := cl.Subscribe(topic, 0, func(_ paho.Client, m paho.Message) { c.out.Write(m.Payload()) })
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("MQTT subscribe error: %v", t.Error())
	}
	fmt.Fprintf(c.log, "Subscribed to %s\n", topic)
	<-ctx.Done()
	return nil
}
