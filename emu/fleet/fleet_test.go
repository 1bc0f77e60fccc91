package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mosemu/mosemu/mqtt"
)

func TestFleetAnswersRPCOverMQTT(t *testing.T) {
	b, err := mqtt.StartBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f, err := Start(context.Background(), Options{Count: 30, StateDir: t.TempDir(), MQTTBroker: b.Addr(), Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Failed) != 0 {
		t.Fatal(f.Failed)
	}
	if n := f.WaitConnected(20 * time.Second); n != 30 {
		t.Fatalf("%d/30 connected", n)
	}
	ids := map[string]bool{}
	for _, d := range f.Devices {
		ids[d.DeviceID()] = true
	}
	if len(ids) != 30 {
		t.Fatalf("device ids not unique: %d", len(ids))
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("mos-test"))
	c.Connect().Wait()
	defer c.Disconnect(50)
	replies := make(chan string, 64)
	c.Subscribe("+/rpc-resp/mos-test/rpc", 1, func(_ paho.Client, m paho.Message) { replies <- string(m.Payload()) }).Wait()
	time.Sleep(100 * time.Millisecond)
	for _, d := range f.Devices[:10] {
		id := d.DeviceID()
		c.Publish(id+"/rpc", 1, false, fmt.Sprintf(`{"src":"%s/rpc-resp/mos-test","dst":"%s","id":1,"method":"Sys.GetInfo"}`, id, id)).Wait()
	}
	for i := 0; i < 10; i++ {
		select {
		case r := <-replies:
			var fr struct{ Result struct{ ID string } }
			json.Unmarshal([]byte(r), &fr)
			if !ids[fr.Result.ID] || !strings.Contains(r, `"arch": "esp32"`) {
				t.Fatalf("reply %s", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d replies", i)
		}
	}
}

// BenchmarkIdleDeviceMemory boots a fleet connected to an embedded broker
// and reports the heap cost of one idle device (bytes/device) and the boot
// time per device.
func BenchmarkIdleDeviceMemory(b *testing.B) {
	n := 200
	if testing.Short() {
		n = 50
	}
	for b.Loop() {
		br, _ := mqtt.StartBroker("127.0.0.1:0", nil)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		f, err := Start(context.Background(), Options{Count: n, StateDir: b.TempDir(), MQTTBroker: br.Addr()})
		if err != nil {
			b.Fatal(err)
		}
		boot := time.Since(start)
		f.WaitConnected(60 * time.Second)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(n), "heap-bytes/device")
		b.ReportMetric(float64(boot.Microseconds())/float64(n), "boot-µs/device")
		b.ReportMetric(float64(runtime.NumGoroutine())/float64(n), "goroutines/device")
		f.Close()
		br.Close()
	}
}
