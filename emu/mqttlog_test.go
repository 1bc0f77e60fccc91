package emu

import (
	"bufio"
	"fmt"
	"os/exec"
	"regexp"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/mqtt"
)

// consoleDevice starts a device on broker with debug.stderr_topic set to
// "<device.id>/log" (saved, then a reboot), as a user does before
// `mos console --port mqtt://broker/<device.id>`.
func consoleDevice(t *testing.T, broker string) (*Device, string) {
	t.Helper()
	d := startWith(t, Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTBroker: broker, Seed: 11})
	topic := d.DeviceID() + "/log"
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"debug": map[string]any{"stderr_topic": topic}}, "save": true})
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	waitMQTT(t, d, true)
	return d, topic
}

// logLine is what the firmware publishes for one log line.
func logLine(devID string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(devID) + ` \d+ \d+\.\d{3} 2\|mg_rpc\.c:312 +Sys\.GetInfo via WS_in 127\.0\.0\.1:\d+\n$`)
}

func TestConsoleOverMQTTEmbeddedBroker(t *testing.T) {
	b, err := mqtt.StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d, topic := consoleDevice(t, b.Addr())
	got := make(chan string, 100)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("mos-console"))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)
	sub.Subscribe(topic, 0, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }).Wait()
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Sys.GetInfo", nil)
	re := logLine(d.DeviceID())
	for deadline := time.After(10 * time.Second); ; {
		select {
		case m := <-got:
			if re.MatchString(m) {
				return
			}
		case <-deadline:
			t.Fatal("no Sys.GetInfo log line on " + topic)
		}
	}
}

func TestConsoleOverMosquitto(t *testing.T) {
	port := testkit.StartMosquitto(t, "")
	subBin := testkit.NeedTool(t, "apt-get install mosquitto-clients", "mosquitto_sub")
	d, topic := consoleDevice(t, fmt.Sprintf("127.0.0.1:%d", port))
	cmd := exec.Command(subBin, "-h", "127.0.0.1", "-p", fmt.Sprint(port), "-t", topic, "-W", "15")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text() + "\n"
		}
		close(lines)
	}()
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	re := logLine(d.DeviceID())
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C: // until mosquitto_sub has subscribed
			call(t, c, "Sys.GetInfo", nil)
		case l, ok := <-lines:
			if !ok {
				t.Fatal("mosquitto_sub saw no Sys.GetInfo log line")
			}
			if re.MatchString(l) {
				return
			}
		}
	}
}
