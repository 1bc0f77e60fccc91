package emu

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/romloader"
	"golang.org/x/sys/unix"
)

func romRequest(cmd byte, data []byte) []byte {
	h := make([]byte, 8)
	h[1] = cmd
	binary.LittleEndian.PutUint16(h[2:], uint16(len(data)))
	return romloader.Encode(append(h, data...))
}

// TestDownloadModeOverPTY talks to the ROM loader on the device's pty as
// esptool does: SYNC puts the chip in download mode, READ_REG reads the
// chip magic and the efuse MAC words; FLASH_END(run) boots the firmware,
// which answers RPC again.
func TestDownloadModeOverPTY(t *testing.T) {
	d := startDevice(t, t.TempDir(), true)
	f, err := os.OpenFile(d.SerialPath(), os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var dec romloader.Decoder
	read := func(n int) [][]byte {
		var frames [][]byte
		buf := make([]byte, 4096)
		f.SetReadDeadline(time.Now().Add(3 * time.Second))
		for len(frames) < n {
			m, err := f.Read(buf)
			if err != nil {
				t.Fatalf("after %d frames: %v", len(frames), err)
			}
			frames = append(frames, dec.Feed(buf[:m])...)
		}
		return frames
	}
	f.Write(romRequest(romloader.CmdSync, append([]byte{7, 7, 0x12, 0x20}, bytes.Repeat([]byte{0x55}, 32)...)))
	if fr := read(8); binary.LittleEndian.Uint32(fr[0][4:]) != 0x20120707 {
		t.Fatalf("SYNC reply %x", fr[0])
	}
	f.Write(romRequest(romloader.CmdReadReg, binary.LittleEndian.AppendUint32(nil, 0x40001000)))
	if fr := read(1); binary.LittleEndian.Uint32(fr[0][4:]) != romloader.MagicESP32 {
		t.Fatalf("magic reply %x", fr[0])
	}
	f.Write(romRequest(romloader.CmdReadReg, binary.LittleEndian.AppendUint32(nil, 0x3FF5A004)))
	mac := d.Efuses().MAC()
	if fr := read(1); binary.LittleEndian.Uint32(fr[0][4:]) != binary.BigEndian.Uint32(mac[2:]) {
		t.Fatalf("efuse word 1 reply %x for MAC %x", fr[0], mac)
	}
	f.Write(romRequest(romloader.CmdFlashEnd, binary.LittleEndian.AppendUint32(nil, 1)))
	read(1)
	deadline := time.Now().Add(5 * time.Second)
	for d.DeviceID() == "" {
		if time.Now().After(deadline) {
			t.Fatal("firmware did not come back after FLASH_END")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "RPC.Ping", nil); err != nil {
		t.Fatal(err)
	}
}
