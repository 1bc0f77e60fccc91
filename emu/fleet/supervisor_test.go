package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/mqtt"
	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
)

// mqttCall publishes one request frame to <id>/rpc as mos does and waits
// for the reply on the src topic.
func mqttCall(broker, devID, method string, wait time.Duration) ([]byte, error) {
	cid := fmt.Sprintf("t-%d", time.Now().UnixNano())
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(cid))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(50)
	src := devID + "/rpc-resp/" + cid
	got := make(chan []byte, 1)
	c.Subscribe(src+"/rpc", 1, func(_ paho.Client, m paho.Message) { got <- m.Payload() }).Wait()
	c.Publish(devID+"/rpc", 1, false, fmt.Sprintf(`{"src":%q,"id":77,"method":%q}`, src, method)).Wait()
	select {
	case b := <-got:
		return b, nil
	case <-time.After(wait):
		return nil, fmt.Errorf("no reply to %s", method)
	}
}

// TestPanickingHandlerCrashesOnlyItsDevice: a handler that panics, called
// on one device of a fleet over every channel, crashes and reboots that
// device only (Guru Meditation on its console, finding=crash, counted in
// Sys.GetInfo); the process survives and the other devices never notice.
func TestPanickingHandlerCrashesOnlyItsDevice(t *testing.T) {
	b, err := mqtt.StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	consoles := make([]*testkit.SyncBuffer, 3)
	f, err := Start(context.Background(), Options{Count: 3, StateDir: t.TempDir(), BrokerAddr: b.Addr(),
		Customize: func(i int, o *emu.Options) {
			consoles[i] = &testkit.SyncBuffer{}
			o.Console = consoles[i]
			o.Serial = i == 0
			o.Services = func(r rpc.Registrar) {
				r.Register("Test.Panic", "", func(context.Context, *rpc.Request) (json.RawMessage, error) {
					var m map[string]int
					//lint:ignore SA5000 the panic is the point of this handler
					m["boom"]++ // a nil map write: a genuine runtime panic
					return nil, nil
				})
			}
		}})
	if err != nil || len(f.Devices) != 3 {
		t.Fatalf("fleet: %v %v", err, f.Failed)
	}
	defer f.Close()
	if n := f.WaitConnected(context.Background(), 15*time.Second); n != 3 {
		t.Fatalf("%d of 3 devices connected to MQTT", n)
	}
	victim := f.Devices[0]
	boots := func(i int) int { return strings.Count(consoles[i].String(), "Init done") }
	waitBoots := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for boots(0) < want {
			if time.Now().After(deadline) {
				t.Fatalf("device 0 booted %d times, want %d:\n%s", boots(0), want, consoles[0].String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		for i := 1; i < 3; i++ {
			if boots(i) != 1 || f.Devices[i].Crashes() != 0 {
				t.Fatalf("device %d noticed: %d boots, %d crashes", i, boots(i), f.Devices[i].Crashes())
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	channels := []struct {
		name string
		call func() error
	}{
		{"WS", func() error {
			c, err := client.Dial(ctx, "ws://"+victim.HTTPAddr()+"/rpc")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Call(ctx, "Test.Panic", nil)
			return err
		}},
		{"HTTP", func() error {
			c, _ := client.Dial(ctx, "http://"+victim.HTTPAddr()+"/rpc")
			defer c.Close()
			_, err := c.Call(ctx, "Test.Panic", nil)
			return err
		}},
		{"UART", func() error {
			c, err := client.Dial(ctx, victim.SerialPath())
			if err != nil {
				return err
			}
			defer c.Close()
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second) // no reply: the device crashed
			defer ccancel()
			_, err = c.Call(cctx, "Test.Panic", nil)
			return err
		}},
		{"MQTT", func() error {
			// After the reboots the session may not be subscribed yet:
			// repeat until the request reaches the handler.
			before := victim.Crashes()
			for deadline := time.Now().Add(15 * time.Second); victim.Crashes() == before; {
				if _, err := mqttCall(b.Addr(), victim.DeviceID(), "Test.Panic", time.Second); err == nil {
					return nil
				}
				if time.Now().After(deadline) {
					return nil // reported as "answered" below
				}
			}
			return errors.New("crashed")
		}},
	}
	for i, ch := range channels {
		if err := ch.call(); err == nil {
			t.Fatalf("%s: Test.Panic answered", ch.name)
		}
		waitBoots(i + 2)
		if got := victim.Crashes(); got != int64(i+1) {
			t.Fatalf("%s: %d crashes counted, want %d", ch.name, got, i+1)
		}
	}
	// The rebooted device answers, and reports its crashes.
	var info struct {
		Crashes int `json:"crashes"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := client.Dial(ctx, "http://"+victim.HTTPAddr()+"/rpc")
		if err == nil {
			var res json.RawMessage
			if res, err = c.Call(ctx, "Sys.GetInfo", nil); err == nil {
				json.Unmarshal(res, &info)
			}
			c.Close()
		}
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if info.Crashes != 4 {
		t.Fatalf("Sys.GetInfo crashes = %d, want 4", info.Crashes)
	}
	con := consoles[0].String()
	for _, want := range []string{"Guru Meditation Error: Core  0 panic'ed (Go panic in RPC Test.Panic: assignment to entry in nil map)",
		"--- BEGIN CORE DUMP ---", "finding=crash", "Rebooting..."} {
		if !strings.Contains(con, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	// The bystanders answer on every channel and never crashed.
	for i := 1; i < 3; i++ {
		if r, err := mqttCall(b.Addr(), f.Devices[i].DeviceID(), "Sys.GetInfo", 5*time.Second); err != nil || !bytes.Contains(r, []byte(`"result"`)) {
			t.Fatalf("device %d over MQTT: %s %v", i, r, err)
		}
		c, err := client.Dial(ctx, "ws://"+f.Devices[i].HTTPAddr()+"/rpc")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(ctx, "RPC.Ping", nil); err != nil {
			t.Fatalf("device %d over WS: %v", i, err)
		}
		c.Close()
		if strings.Contains(consoles[i].String(), "Guru Meditation") {
			t.Fatalf("device %d printed a crash", i)
		}
	}
}
