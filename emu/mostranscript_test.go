package emu

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/mosemu/mosemu/emu/romloader"
)

// readTranscript returns the host's request frames and the device's ROM
// response frames of a transcript in testdata/mos.
func readTranscript(t *testing.T, path string) (requests, responses [][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var host, dev romloader.Decoder
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		b, err := hex.DecodeString(line[2:])
		if err != nil {
			t.Fatal(err)
		}
		switch line[0] {
		case '>':
			requests = append(requests, host.Feed(b)...)
		case '<':
			for _, fr := range dev.Feed(b) {
				if len(fr) >= 8 && fr[0] == 1 {
					responses = append(responses, fr)
				}
			}
		}
	}
	return requests, responses
}

// TestMosTranscriptReplay replays what the real mos sent for
// `esp32-efuse-get`, `esp32-efuse-set JTAG_disable=1 flash_crypt_config=0xf
// --dry-run=false` and another `esp32-efuse-get` (recorded on the pty, see
// the file's header) to a new device with the same seed: every ROM reply
// must be byte for byte the one mos got, and the burn must be kept.
func TestMosTranscriptReplay(t *testing.T) {
	requests, want := readTranscript(t, "testdata/mos/esp32-efuse-session.txt")
	d := startWith(t, Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 42})
	h := openROMHost(t, d)
	var got [][]byte
	for _, req := range requests {
		h.send(romloader.Encode(req))
		n := 1
		if req[1] == romloader.CmdSync {
			n = 8
		}
		for i := 0; i < n; i++ {
			got = append(got, h.frame(func(f []byte) bool { return len(f) >= 8 && f[0] == 1 }))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d replies to %d requests, mos got %d", len(got), len(requests), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("reply %d: %x, mos got %x", i, got[i], want[i])
		}
	}
	for _, f := range []string{"JTAG_DISABLE", "FLASH_CRYPT_CONFIG"} {
		if v, _ := d.Efuses().Value(f); v == 0 {
			t.Errorf("%s not burnt", f)
		}
	}
	t.Logf("%d requests, %d replies identical", len(requests), len(got))
}
