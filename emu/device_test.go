package emu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/client"
)

// startWith creates and starts a device with o, closed when the test ends.
func startWith(t testing.TB, o Options) *Device {
	t.Helper()
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d
}

func startDevice(t *testing.T, dir string, serial bool) *Device {
	t.Helper()
	return startWith(t, Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Serial: serial, Seed: 42})
}

func dial(t *testing.T, url string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func call(t *testing.T, c *client.Client, method string, params any) json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Call(ctx, method, params)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return res
}

// putGet stores data in 512-byte FS.Put chunks and reads it back with
// 512-byte FS.Get calls, as mos put/get do.
func putGet(t *testing.T, c *client.Client, name string, data []byte) {
	t.Helper()
	for off := 0; off < len(data); off += 512 {
		chunk := data[off:min(off+512, len(data))]
		call(t, c, "FS.Put", map[string]any{"filename": name, "offset": off, "append": off > 0, "data": base64.StdEncoding.EncodeToString(chunk)})
	}
	var got []byte
	for {
		var r struct {
			Data string `json:"data"`
			Left int    `json:"left"`
		}
		json.Unmarshal(call(t, c, "FS.Get", map[string]any{"filename": name, "offset": len(got), "len": 512}), &r)
		b, _ := base64.StdEncoding.DecodeString(r.Data)
		got = append(got, b...)
		if r.Left == 0 {
			break
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s: read back %d bytes, differ from the %d written", name, len(got), len(data))
	}
}

func TestEveryChannel(t *testing.T) {
	d := startDevice(t, t.TempDir(), true)
	data := make([]byte, 100<<10)
	rand.Read(data)
	for _, tc := range []struct {
		name, url string
		size      int
	}{
		{"ws", "ws://" + d.HTTPAddr() + "/rpc", 100 << 10},
		{"http", "http://" + d.HTTPAddr() + "/rpc", 100 << 10},
		{"uart", d.SerialPath(), 8 << 10}, // every serial call costs a 200 ms handshake, as with mos
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, tc.url)
			var info struct {
				ID   string `json:"id"`
				Arch string `json:"arch"`
				MAC  string `json:"mac"`
			}
			json.Unmarshal(call(t, c, "Sys.GetInfo", nil), &info)
			if info.Arch != "esp32" || !strings.HasPrefix(info.ID, "esp32_") || !strings.HasSuffix(info.MAC, info.ID[6:]) {
				t.Fatalf("Sys.GetInfo = %+v", info)
			}
			ping := call(t, c, "RPC.Ping", nil)
			want := map[string]string{"ws": "127.0.0.1:", "http": "127.0.0.1:", "uart": "UART0"}[tc.name]
			if !strings.Contains(string(ping), want) {
				t.Fatalf("RPC.Ping = %s", ping)
			}
			putGet(t, c, "/"+tc.name+".bin", data[:tc.size])
			call(t, c, "FS.Remove", map[string]any{"filename": tc.name + ".bin"}) // the fs holds ca.pem and conf0.json too
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.Call(ctx, "No.Such", nil)
			if e, ok := err.(*rpc.Error); !ok || e.Code != 404 || e.Message != "No handler for No.Such" {
				t.Fatalf("unknown method: %v", err)
			}
		})
	}
}

func TestConfigSetSaveRebootGet(t *testing.T) {
	dir := t.TempDir()
	d := startDevice(t, dir, false)
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	res := call(t, c, "Config.Set", map[string]any{"config": map[string]any{"debug": map[string]any{"level": 3}, "wifi": map[string]any{"sta": map[string]any{"ssid": "Net"}}}, "save": true, "reboot": true})
	if string(res) != `{"saved": true}` {
		t.Fatalf("Config.Set = %s", res)
	}
	// The device really reboots: the WebSocket drops.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Call(ctx, "RPC.Ping", nil)
		cancel()
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connection survived the reboot")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	c2 := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	if got := call(t, c2, "Config.Get", map[string]any{"key": "wifi.sta.ssid"}); string(got) != `"Net"` {
		t.Fatalf("after reboot wifi.sta.ssid = %s", got)
	}
	if got := call(t, c2, "Config.Get", map[string]any{"key": "debug.level"}); string(got) != "3" {
		t.Fatalf("after reboot debug.level = %s", got)
	}
}

// TestKill9LosesNothing runs a device in a child process, saves a config and
// a file through RPC, kills it with SIGKILL, and boots the state again.
func TestKill9LosesNothing(t *testing.T) {
	serveChildDevice()
	dir := t.TempDir()
	cmd, addr := childDevice(t, "TestKill9LosesNothing", dir)
	c := dial(t, "http://"+addr+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"device": map[string]any{"sn": "SN-123"}}, "save": true})
	secret := bytes.Repeat([]byte("kept "), 4000)
	putGet(t, c, "/kept.txt", secret)
	// A second device on the same state is refused while the first runs,
	// naming it; the lock dies with it (kill -9 included).
	if _, err := New(Options{StateDir: dir}); !errors.Is(err, ErrStateInUse) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", cmd.Process.Pid)) {
		t.Fatalf("second device on a running state: %v", err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	d := startDevice(t, dir, false)
	c2 := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	if got := call(t, c2, "Config.Get", map[string]any{"key": "device.sn"}); string(got) != `"SN-123"` {
		t.Fatalf("device.sn after kill -9 = %s", got)
	}
	putGet(t, c2, "/kept2.txt", secret) // and the fs is writable
	var r struct{ Data string }
	json.Unmarshal(call(t, c2, "FS.Get", map[string]any{"filename": "kept.txt"}), &r)
	if b, _ := base64.StdEncoding.DecodeString(r.Data); !bytes.Equal(b, secret) {
		t.Fatal("file lost after kill -9")
	}
}

func TestStateIsSparse(t *testing.T) {
	dir := t.TempDir()
	d := startDevice(t, dir, false)
	c := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	data := make([]byte, 100<<10)
	rand.Read(data)
	putGet(t, c, "/a.bin", data)
	d.Close()
	var disk int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			disk += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	if disk > 512<<10 {
		t.Fatalf("state dir after writing 100 KiB uses %d bytes on disk", disk)
	}
	t.Logf("state dir after writing 100 KiB: %d KiB on disk", disk>>10)
}

func TestCorruptPartitionTableRefusesBoot(t *testing.T) {
	dir := t.TempDir()
	d := startDevice(t, dir, false)
	d.Flash().WriteAt([]byte{0x00}, 0x8005) // clear bits of the nvs offset: the MD5 no longer matches
	if err := d.Reboot(); err == nil || !strings.Contains(err.Error(), "partition table") {
		t.Fatalf("boot with a corrupt partition table: %v", err)
	}
}
