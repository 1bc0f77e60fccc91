package emu

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/romloader"
	"github.com/mosemu/mosemu/internal/testkit"
	"golang.org/x/sys/unix"
)

// startESP8266 starts an ESP8266 device with a pty, seed 42.
func startESP8266(t *testing.T, dir string) *Device {
	t.Helper()
	return startWith(t, Options{Arch: "esp8266", StateDir: dir, HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 42})
}

// transcriptStep is one chunk of a recorded serial session.
type transcriptStep struct {
	host bool // written by the host
	data []byte
}

func loadTranscript(t *testing.T, path string) []transcriptStep {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []transcriptStep
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line[2:])
		if err != nil || (line[0] != '>' && line[0] != '<') {
			t.Fatalf("bad transcript line %.40q", line)
		}
		steps = append(steps, transcriptStep{host: line[0] == '>', data: b})
	}
	return steps
}

// TestMosESP8266Transcript replays, on the device's pty, what the real mos
// wrote while flashing an ESP8266 through its flasher stub (ROM connect,
// stub upload, ECHO sync, READ_CHIP_ID, FLASH_DIGEST dedup, compressed and
// empty FLASH_WRITE blocks, verification, then a second session whose SYNC
// finds the stub running, and FLASH_READ), and checks that every SLIP frame
// the device sends back is the one recorded.
func TestMosESP8266Transcript(t *testing.T) {
	d := startESP8266(t, t.TempDir())
	replayTranscript(t, d, filepath.Join("testdata", "mos", "esp8266-flash-write-read.txt"))
	back := make([]byte, 3*4096)
	d.Flash().ReadAt(back, 0x300000)
	if back[0] != 11 || back[4096] != 0xFF || back[8192+3] != 9 {
		t.Fatalf("flash at 0x300000 does not hold the pattern: %x %x %x", back[0], back[4096], back[8192+3])
	}
}

// TestMosESP8266FlashZip replays `mos flash --esp-erase-chip` of the
// zip of `mosemu fw-bundle-esp8266`, then checks that the chip boots what
// was flashed (rBoot from 0x0, the app of the zip from slot 0, the
// filesystem image of the zip with its files) and answers RPC as the
// factory build.
func TestMosESP8266FlashZip(t *testing.T) {
	var con testkit.SyncBuffer
	d := startWith(t, Options{Arch: "esp8266", StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 42, Console: &con})
	replayTranscript(t, d, filepath.Join("testdata", "mos", "esp8266-flash-zip.txt"))
	deadline := time.Now().Add(5 * time.Second)
	for d.DeviceID() == "" || !strings.Contains(con.String(), "Init done") {
		if time.Now().After(deadline) {
			t.Fatalf("firmware did not boot after BOOT_FW:\n%s", con.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	log := con.String()
	for _, want := range []string{"rBoot v1.2.1-cesanta1", "Booting rom 0 (0x100000).", "esp_main.c:165          SDK "} {
		if !strings.Contains(log, want) {
			t.Fatalf("boot log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log[strings.LastIndex(log, "rBoot v1"):], "Formatting the root filesystem") {
		t.Fatalf("the zip's filesystem image did not mount:\n%s", log)
	}
	z, err := FirmwareZip8266(Bundle8266{})
	if err != nil {
		t.Fatal(err)
	}
	_, files := readZip(t, z)
	app := files["mosemu-1.0/mosemu.bin"]
	got := make([]byte, len(app))
	d.Flash().ReadAt(got, 0x100000)
	if len(app) == 0 || !bytes.Equal(got, app) {
		t.Fatal("slot 0 does not hold the app image of the zip")
	}
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	var info struct {
		FWVersion string `json:"fw_version"`
		FWID      string `json:"fw_id"`
	}
	json.Unmarshal(call(t, c, "Sys.GetInfo", nil), &info)
	if info.FWVersion != FWVersion || info.FWID != FWBuildID {
		t.Errorf("Sys.GetInfo after the flash: %+v", info)
	}
	// The chip was erased: the files come from the zip's fs image.
	var ls []string
	json.Unmarshal(call(t, c, "FS.List", nil), &ls)
	for _, want := range []string{"conf0.json", "ca.pem"} {
		if !slices.Contains(ls, want) {
			t.Errorf("FS.List after the flash = %v, lacks %s", ls, want)
		}
	}
}

// replayTranscript writes, on the device's pty, what a recorded host wrote
// and checks that every SLIP frame the device sends back is the one
// recorded, in order.
func replayTranscript(t *testing.T, d *Device, path string) {
	t.Helper()
	steps := loadTranscript(t, path)
	var want [][]byte
	var dec romloader.Decoder
	wantAfter := make([]int, len(steps)) // frames sent by the device up to step i
	for i, s := range steps {
		if !s.host {
			want = append(want, deviceFrames(dec.Feed(s.data))...)
		}
		wantAfter[i] = len(want)
	}
	f, err := os.OpenFile(d.SerialPath(), os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	time.Sleep(100 * time.Millisecond)
	drain(f) // the boot log

	var got [][]byte
	var rdec romloader.Decoder
	buf := make([]byte, 65536)
	for i, s := range steps {
		if !s.host {
			continue
		}
		if _, err := f.Write(s.data); err != nil {
			t.Fatal(err)
		}
		// Wait for the frames the device sent before the host's next write.
		next := len(want)
		for j := i + 1; j < len(steps); j++ {
			if steps[j].host {
				next = wantAfter[j]
				break
			}
		}
		f.SetReadDeadline(time.Now().Add(5 * time.Second))
		for len(got) < next {
			n, err := f.Read(buf)
			if err != nil {
				t.Fatalf("step %d: got %d of %d frames: %v", i, len(got), next, err)
			}
			got = append(got, deviceFrames(rdec.Feed(buf[:n]))...)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("device sent %d frames, the recording has %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d: got %x, recorded %x", i, got[i], want[i])
		}
	}
}

// deviceFrames drops the console text a SLIP decoder takes for a frame
// (what the ROM prints between frames when a SYNC resets the chip).
func deviceFrames(frames [][]byte) [][]byte {
	out := frames[:0]
	for _, f := range frames {
		if !bytes.Contains(f, []byte(" ets Jan  8 2013,rst cause:")) {
			out = append(out, f)
		}
	}
	return out
}

// drain reads whatever is pending on f.
func drain(f *os.File) {
	buf := make([]byte, 65536)
	for {
		f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := f.Read(buf); err != nil {
			return
		}
	}
}
