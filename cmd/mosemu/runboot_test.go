package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/partition"
	"github.com/mosemu/mosemu/emu/romloader"
	"golang.org/x/sys/unix"
)

// TestRunSaysUpOnlyWhenBooted runs `mosemu run` (this test binary
// re-executed as the command) on a state whose partition table is
// corrupt: it must not say "device up" but why, and where the ROM loader
// is; after the table is written back through the ROM loader on that pty,
// it says "device up".
func TestRunSaysUpOnlyWhenBooted(t *testing.T) {
	if args := os.Getenv("MOSEMU_TEST_MAIN"); args != "" {
		os.Args = append([]string{"mosemu"}, strings.Fields(args)...)
		main()
		return
	}
	dir := t.TempDir()
	d, err := emu.New(emu.Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	good := make([]byte, partition.SectorSize)
	d.Flash().ReadAt(good, partition.Offset)
	d.Flash().WriteAt([]byte{0x00}, partition.Offset+5)
	d.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestRunSaysUpOnlyWhenBooted$")
	cmd.Env = append(os.Environ(), "MOSEMU_TEST_MAIN=run --state "+dir+" --http 127.0.0.1:0 --broker=false -q")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("mosemu run exited")
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("mosemu run said nothing")
		}
		return ""
	}
	first := next()
	if !strings.Contains(first, "did not boot") || !strings.Contains(first, "partition table") {
		t.Fatalf("first line %q", first)
	}
	loader := next()
	i := strings.Index(loader, "/dev/pts/")
	if i < 0 {
		t.Fatalf("no ROM loader pty in %q", loader)
	}
	pty := strings.Fields(loader[i:])[0]

	f, err := os.OpenFile(pty, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var dec romloader.Decoder
	rom := func(cmd byte, data []byte, sum uint32) {
		t.Helper()
		h := make([]byte, 8)
		h[1] = cmd
		binary.LittleEndian.PutUint16(h[2:], uint16(len(data)))
		binary.LittleEndian.PutUint32(h[4:], sum)
		f.Write(romloader.Encode(append(h, data...)))
		buf := make([]byte, 512)
		for {
			f.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := f.Read(buf)
			if err != nil {
				t.Fatalf("command %#x: %v", cmd, err)
			}
			for _, fr := range dec.Feed(buf[:n]) {
				if len(fr) >= 10 && fr[0] == 1 && fr[1] == cmd {
					if fr[len(fr)-4] != 0 {
						t.Fatalf("command %#x failed: %x", cmd, fr)
					}
					return
				}
			}
		}
	}
	u32 := func(v ...uint32) (b []byte) {
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, x)
		}
		return b
	}
	rom(romloader.CmdSync, append([]byte{7, 7, 0x12, 0x20}, bytes.Repeat([]byte{0x55}, 32)...), 0)
	rom(romloader.CmdFlashBegin, u32(uint32(len(good)), 4, 0x400, partition.Offset), 0)
	for i := 0; i < 4; i++ {
		blk := good[i*0x400 : (i+1)*0x400]
		sum := byte(0xEF)
		for _, c := range blk {
			sum ^= c
		}
		rom(romloader.CmdFlashData, append(u32(0x400, uint32(i), 0, 0), blk...), uint32(sum))
	}
	rom(romloader.CmdFlashEnd, u32(1), 0)
	for {
		if l := next(); strings.Contains(l, "device up") {
			break
		}
	}
}
