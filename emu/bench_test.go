package emu

import (
	"context"
	"testing"

	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
)

func benchDevice(b *testing.B) *Device {
	return startWith(b, Options{StateDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 7})
}

// BenchmarkDispatchInProcess is the baseline for the channel benchmarks:
// RPC.Ping through the device's dispatcher with no transport.
func BenchmarkDispatchInProcess(b *testing.B) {
	d := benchDevice(b)
	disp := d.fw.disp
	frame := []byte(`{"src":"mos","id":1386428395371,"method":"RPC.Ping"}`)
	ch := rpc.ChannelInfo{Type: rpc.ChanWS, Info: "bench"}
	for b.Loop() {
		if _, err := disp.HandleFrame(context.Background(), ch, frame); err != nil {
			b.Fatal(err)
		}
	}
}

func benchChannel(b *testing.B, url string) {
	c, err := client.Dial(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		if _, err := c.Call(context.Background(), "RPC.Ping", nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCallWS is RPC.Ping over one WebSocket connection.
func BenchmarkCallWS(b *testing.B) { benchChannel(b, "ws://"+benchDevice(b).HTTPAddr()+"/rpc") }

// BenchmarkCallHTTP is RPC.Ping as HTTP POSTs (a connection per call, as
// the firmware closes it).
func BenchmarkCallHTTP(b *testing.B) { benchChannel(b, "http://"+benchDevice(b).HTTPAddr()+"/rpc") }

// BenchmarkCallUART is RPC.Ping over the pty with mos framing (handshake,
// CRC) but without mos's 200 ms pacing.
func BenchmarkCallUART(b *testing.B) { benchChannel(b, benchDevice(b).SerialPath()) }
