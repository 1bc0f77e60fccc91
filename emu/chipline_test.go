package emu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mosemu/mosemu/efuse"
	"github.com/mosemu/mosemu/emu/partition"
	"github.com/mosemu/mosemu/emu/romloader"
	"github.com/mosemu/mosemu/internal/testkit"
	"golang.org/x/sys/unix"
)

// romHost is a host tool on the device's pty speaking SLIP.
type romHost struct {
	t   *testing.T
	f   *os.File
	dec romloader.Decoder
	got [][]byte
}

func openROMHost(t *testing.T, d *Device) *romHost {
	t.Helper()
	f, err := os.OpenFile(d.SerialPath(), os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &romHost{t: t, f: f}
}

func (h *romHost) send(b []byte) {
	h.t.Helper()
	if _, err := h.f.Write(b); err != nil {
		h.t.Fatal(err)
	}
}

// frame returns the next SLIP frame that keep accepts (others, such as
// console text between frames, are skipped).
func (h *romHost) frame(keep func([]byte) bool) []byte {
	h.t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(5 * time.Second)
	for {
		for len(h.got) > 0 {
			f := h.got[0]
			h.got = h.got[1:]
			if keep(f) {
				return f
			}
		}
		h.f.SetReadDeadline(deadline)
		n, err := h.f.Read(buf)
		if err != nil {
			h.t.Fatalf("reading the pty: %v", err)
		}
		h.got = append(h.got, h.dec.Feed(buf[:n])...)
	}
}

// rom sends a ROM command and returns its response frame.
func (h *romHost) rom(cmd byte, data []byte, sum uint32) []byte {
	h.t.Helper()
	hdr := make([]byte, 8)
	hdr[1] = cmd
	binary.LittleEndian.PutUint16(hdr[2:], uint16(len(data)))
	binary.LittleEndian.PutUint32(hdr[4:], sum)
	h.send(romloader.Encode(append(hdr, data...)))
	return h.frame(func(f []byte) bool { return len(f) >= 8 && f[0] == 1 && f[1] == cmd })
}

var syncData = append([]byte{7, 7, 0x12, 0x20}, bytes.Repeat([]byte{0x55}, 32)...)

// sync sends SYNC and checks the 8 ROM replies (value 0x20120707).
func (h *romHost) sync() {
	h.t.Helper()
	r := h.rom(romloader.CmdSync, syncData, 0)
	for i := 1; i < 8; i++ {
		r = h.frame(func(f []byte) bool { return len(f) >= 8 && f[0] == 1 && f[1] == romloader.CmdSync })
	}
	if v := binary.LittleEndian.Uint32(r[4:]); v != 0x20120707 {
		h.t.Fatalf("SYNC answered with value %#x, not the ROM's", v)
	}
	h.got = nil
}

func (h *romHost) readReg(addr uint32) uint32 {
	h.t.Helper()
	r := h.rom(romloader.CmdReadReg, le32(addr), 0)
	if len(r) != 12 || r[8] != 0 {
		h.t.Fatalf("READ_REG %#x: %x", addr, r)
	}
	return binary.LittleEndian.Uint32(r[4:])
}

func le32(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func xorSum(p []byte) uint32 {
	c := byte(0xEF)
	for _, b := range p {
		c ^= b
	}
	return uint32(c)
}

// flashROM writes data at off with the ROM's FLASH_BEGIN/DATA commands.
func (h *romHost) flashROM(off uint32, data []byte) {
	h.t.Helper()
	const bs = 0x400
	blocks := (len(data) + bs - 1) / bs
	if r := h.rom(romloader.CmdFlashBegin, le32(uint32(len(data)), uint32(blocks), bs, off), 0); r[8] != 0 {
		h.t.Fatalf("FLASH_BEGIN: %x", r)
	}
	for i := 0; i < blocks; i++ {
		blk := bytes.Repeat([]byte{0xFF}, bs)
		copy(blk, data[i*bs:])
		if r := h.rom(romloader.CmdFlashData, append(le32(bs, uint32(i), 0, 0), blk...), xorSum(blk)); r[8] != 0 {
			h.t.Fatalf("FLASH_DATA %d: %x", i, r)
		}
	}
}

func newSerialDevice(t *testing.T, dir string, con *testkit.SyncBuffer) *Device {
	t.Helper()
	opts := Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 42}
	if con != nil {
		opts.Console = con
	}
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestBootFailureROMReflash corrupts the partition table: the bootloader
// refuses it and the chip boot-loops; a SYNC on the pty still reaches the
// ROM loader, which writes the table back, and FLASH_END(run) boots
// Mongoose OS again.
func TestBootFailureROMReflash(t *testing.T) {
	con := &testkit.SyncBuffer{}
	d := newSerialDevice(t, t.TempDir(), con)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	good := make([]byte, partition.SectorSize)
	d.Flash().ReadAt(good, partition.Offset)
	d.Flash().WriteAt([]byte{0x00}, partition.Offset+5)
	err := d.Reboot()
	var be *BootError
	if !errors.As(err, &be) || be.Stage != "bootloader" {
		t.Fatalf("boot with a corrupt partition table: %v", err)
	}
	if d.Booted() {
		t.Fatal("device claims to be up")
	}
	for _, want := range []string{"rst:0xc (SW_CPU_RESET)", "E (", "boot: load partition table error!"} {
		if !strings.Contains(con.String(), want) {
			t.Fatalf("console lacks %q:\n%s", want, con.String())
		}
	}
	// The boot loop goes on: the next iteration is a SW_RESET.
	testkit.WaitUntil(t, "the next boot of the loop", func() bool { return strings.Contains(con.String(), "rst:0x3 (SW_RESET)") })

	h := openROMHost(t, d)
	h.sync()
	if !strings.Contains(con.String(), "waiting for download") {
		t.Fatal("no 'waiting for download' on the console")
	}
	if got := h.readReg(0x40001000); got != romloader.MagicESP32 {
		t.Fatalf("chip magic %#x", got)
	}
	h.flashROM(partition.Offset, good)
	h.rom(romloader.CmdFlashEnd, le32(1), 0)
	testkit.WaitUntil(t, "Mongoose OS after the re-flash", d.Booted)
	c := dial(t, "ws://"+d.HTTPAddr()+"/rpc")
	call(t, c, "RPC.Ping", nil)
}

// TestErasedFlashBootLoop erases the bootloader: the ROM prints
// "invalid header: 0xffffffff" and loops on the RTC watchdog; the ROM
// loader still answers.
func TestErasedFlashBootLoop(t *testing.T) {
	con := &testkit.SyncBuffer{}
	d := newSerialDevice(t, t.TempDir(), con)
	d.Flash().Erase(0x1000, 0x7000)
	err := d.Start(context.Background())
	var be *BootError
	if !errors.As(err, &be) || be.Stage != "ROM" || !strings.Contains(err.Error(), "invalid header: 0xffffffff") {
		t.Fatalf("boot of an erased bootloader: %v", err)
	}
	testkit.WaitUntil(t, "the watchdog reset of the loop", func() bool { return strings.Contains(con.String(), "rst:0x10 (RTCWDT_RTC_RESET)") })
	h := openROMHost(t, d)
	h.sync()
	if got := h.readReg(0x40001000); got != romloader.MagicESP32 {
		t.Fatalf("chip magic %#x", got)
	}
}

// TestSyncWithUARTRPCDisabled saves rpc.uart.uart_no=-1: the firmware no
// longer reads UART0, yet a SYNC still reaches the ROM loader.
func TestSyncWithUARTRPCDisabled(t *testing.T) {
	d := newSerialDevice(t, t.TempDir(), nil)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := dial(t, "http://"+d.HTTPAddr()+"/rpc")
	call(t, c, "Config.Set", map[string]any{"config": map[string]any{"rpc": map[string]any{"uart": map[string]any{"uart_no": -1}}}, "save": true})
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	h := openROMHost(t, d)
	h.sync()
	mac := d.Efuses().MAC()
	if got := h.readReg(0x3FF5A004); got != binary.BigEndian.Uint32(mac[2:]) {
		t.Fatalf("efuse MAC word %#x", got)
	}
}

// uploadMosStub uploads a stub as mos does (params block, data, code right
// after the params) and reads the stub's first frame.
func (h *romHost) uploadMosStub() {
	h.t.Helper()
	for _, seg := range []struct {
		addr  uint32
		data  []byte
		entry uint32
	}{
		{0x40090000, le32(115200, 0), 0},
		{0x3ffdf030, make([]byte, 60), 0},
		{0x40090008, make([]byte, 4308), 0x40091040},
	} {
		h.rom(romloader.CmdMemBegin, le32(uint32(len(seg.data)), uint32((len(seg.data)+0xFFF)/0x1000), 0x1000, seg.addr), 0)
		for i := 0; i*0x1000 < len(seg.data); i++ {
			blk := seg.data[i*0x1000 : min(len(seg.data), (i+1)*0x1000)]
			h.rom(romloader.CmdMemData, append(le32(uint32(len(blk)), uint32(i), 0, 0), blk...), xorSum(blk))
		}
		flag := uint32(1)
		if seg.entry != 0 {
			flag = 0
		}
		h.rom(romloader.CmdMemEnd, le32(flag, seg.entry), 0)
	}
	h.frame(func(f []byte) bool { return len(f) == 4 }) // the UART divider
}

// TestMosStubFlashReadThenEfuseRead is `mos flash-read` followed at once by
// `mos esp32-efuse-get`: the mos stub is still running when the next ROM
// connect sends SYNC, which must reset the chip into the ROM loader.
func TestMosStubFlashReadThenEfuseRead(t *testing.T) {
	d := newSerialDevice(t, t.TempDir(), nil)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := openROMHost(t, d)
	h.sync()
	h.uploadMosStub()
	// FLASH_READ 2000 bytes of fs_0 in 1024-byte blocks, acking each.
	h.send(romloader.Encode([]byte{0x02}))
	h.send(romloader.Encode(le32(0x190000, 2000, 1024)))
	var got []byte
	for len(got) < 2000 {
		got = append(got, h.frame(func(f []byte) bool { return len(f) > 0 })...)
		h.send(romloader.Encode(le32(uint32(len(got)))))
	}
	h.frame(func(f []byte) bool { return len(f) == 16 })                       // MD5
	if st := h.frame(func(f []byte) bool { return len(f) == 1 }); st[0] != 0 { // status
		t.Fatalf("FLASH_READ status %x", st)
	}
	want := make([]byte, 2000)
	d.Flash().ReadAt(want, 0x190000)
	if !bytes.Equal(got, want) {
		t.Fatal("FLASH_READ data differs from flash")
	}
	// The next mos command connects to the ROM again.
	start := time.Now()
	h.sync()
	mac := d.Efuses().MAC()
	if got := h.readReg(0x6001A004); got != binary.BigEndian.Uint32(mac[2:]) {
		t.Fatalf("efuse MAC word %#x", got)
	}
	t.Logf("SYNC + efuse read after the stub: %v", time.Since(start))
}

// TestEfuseRegistersNeverTouchDiskUnlessBurnt drives the efuse controller
// through the ROM loader as mos and espefuse do: reads, WDATA writes and
// the read command leave efuse.bin alone (and answer at once); the program
// command that burns bits replaces the file before its reply.
func TestEfuseRegistersNeverTouchDiskUnlessBurnt(t *testing.T) {
	dir := t.TempDir()
	d := newSerialDevice(t, dir, nil)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, EfuseFile)
	ino := func() uint64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	before := ino()
	h := openROMHost(t, d)
	h.sync()
	const base = 0x6001A000
	var slowest time.Duration
	timed := func(f func()) {
		start := time.Now()
		f()
		slowest = max(slowest, time.Since(start))
	}
	write := func(addr, v uint32) {
		timed(func() {
			if r := h.rom(romloader.CmdWriteReg, le32(addr, v, 0xFFFFFFFF, 0), 0); r[8] != 0 {
				t.Fatalf("WRITE_REG %#x: %x", addr, r)
			}
		})
	}
	for w := uint32(0); w < 31; w++ { // every read word, as mos reads them all at connect
		timed(func() { h.readReg(base + 4*w) })
	}
	write(base+0x0D8, 0x5A)   // BLK3 WDATA0
	write(base+0x0FC, 0x5AA5) // CONF: read opcode
	write(base+0x104, 1)      // CMD: read
	if ino() != before {
		t.Fatal("efuse.bin rewritten by register accesses that burn nothing")
	}
	t.Logf("slowest efuse register round trip without a burn: %v", slowest)
	write(base+0x0FC, 0x5A5A) // CONF: program opcode
	write(base+0x104, 2)      // CMD: program
	if ino() == before {
		t.Fatal("the burn was not written to efuse.bin before the reply")
	}
	ef, err := efuse.Load(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ef.MarshalBinary()
	if binary.LittleEndian.Uint32(b[4*23:]) != 0x5A { // BLK3 word 0
		t.Fatalf("BLK3 word 0 on disk: %#x", binary.LittleEndian.Uint32(b[4*23:]))
	}
}

// TestBaudTimingOverPTY runs the ROM loader with --baud-timing: 40
// READ_FLASH_SLOW replies (78 bytes each on the wire) take at least as
// long as at 115200 baud; after CHANGE_BAUDRATE to 921600 the same reads
// are paced at that rate (logged).
func TestBaudTimingOverPTY(t *testing.T) {
	d := startWith(t, Options{StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 42, BaudTiming: true})
	h := openROMHost(t, d)
	h.sync()
	reads := func() time.Duration {
		start := time.Now()
		for i := uint32(0); i < 40; i++ {
			if r := h.rom(romloader.CmdReadFlashSlow, le32(0x1000+64*i, 64), 0); len(r) != 8+64+4 {
				t.Fatalf("READ_FLASH_SLOW: %x", r)
			}
		}
		return time.Since(start)
	}
	slow := reads()
	if min := 40 * 78 * 10 * time.Second / 115200; slow < min {
		t.Fatalf("40 reads at 115200 baud took %v, the wire needs %v", slow, min)
	}
	h.rom(romloader.CmdChangeBaud, le32(921600, 0), 0)
	fast := reads()
	t.Logf("40 READ_FLASH_SLOW: %v at 115200 baud, %v at 921600", slow, fast)
}

// TestDownloadModeExits: mos's RPC handshake leaves download mode at once
// (the UART RPC then answers); a SYNC while the esptool stub runs resets
// the chip into the ROM loader (ROM SYNC value, not the stub's 0).
func TestDownloadModeExits(t *testing.T) {
	d := newSerialDevice(t, t.TempDir(), nil)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := openROMHost(t, d)
	h.sync()
	code := make([]byte, 0x1800) // esptool's ESP32 stub text: the entry lies in it
	h.rom(romloader.CmdMemBegin, le32(uint32(len(code)), 1, 0x1800, 0x400a8000), 0)
	h.rom(romloader.CmdMemData, append(le32(uint32(len(code)), 0, 0, 0), code...), xorSum(code))
	h.rom(romloader.CmdMemEnd, le32(0, 0x400a902c), 0)
	h.frame(func(f []byte) bool { return string(f) == "OHAI" })
	h.sync() // fails unless the ROM answers
	if !d.InDownloadMode() || d.Booted() {
		t.Fatal("not in download mode")
	}
	c := dial(t, d.SerialPath()) // the RPC handshake
	call(t, c, "Sys.GetInfo", nil)
	if d.InDownloadMode() {
		t.Fatal("still in download mode after the RPC handshake")
	}
}

// TestUnmountableFSBootLoopAndRecovery fills the root filesystem with
// garbage: Mongoose OS cannot mount it and the chip restarts
// (rst:0xc SW_CPU_RESET) in a loop; the ROM loader erases the partition
// (FLASH_BEGIN erases) and FLASH_END(run) boots a freshly formatted fs.
func TestUnmountableFSBootLoopAndRecovery(t *testing.T) {
	con := &testkit.SyncBuffer{}
	d := newSerialDevice(t, t.TempDir(), con)
	fs, _ := partition.DefaultESP32().Find("fs_0")
	d.Flash().Erase(int64(fs.Offset), 0x2000)
	d.Flash().WriteAt(bytes.Repeat([]byte("not a filesystem"), 0x200), int64(fs.Offset))
	err := d.Start(context.Background())
	var be *BootError
	if !errors.As(err, &be) || be.Stage != "firmware" {
		t.Fatalf("boot with a garbage fs: %v", err)
	}
	testkit.WaitUntil(t, "the restart of the loop", func() bool { return strings.Contains(con.String(), "rst:0xc (SW_CPU_RESET)") })
	h := openROMHost(t, d)
	h.sync()
	h.flashROM(fs.Offset, bytes.Repeat([]byte{0xFF}, 0x2000))
	h.rom(romloader.CmdFlashEnd, le32(1), 0)
	testkit.WaitUntil(t, "Mongoose OS after the erase", d.Booted)
	call(t, dial(t, "ws://"+d.HTTPAddr()+"/rpc"), "FS.List", nil)
}

// TestESP8266DownloadMode: the ESP8266's ROM line changes to the UART boot
// mode and its loader answers with 2 status bytes.
func TestESP8266DownloadMode(t *testing.T) {
	con := &testkit.SyncBuffer{}
	d := startWith(t, Options{Arch: "esp8266", StateDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Serial: true, Seed: 42, Console: con})
	h := openROMHost(t, d)
	h.sync()
	r := h.rom(romloader.CmdReadReg, le32(0x40001000), 0)
	if len(r) != 10 || binary.LittleEndian.Uint32(r[4:]) != romloader.MagicESP8266 {
		t.Fatalf("magic reply %x", r)
	}
	if !strings.Contains(con.String(), " ets Jan  8 2013,rst cause:2, boot mode:(1,7)") {
		t.Fatalf("console:\n%s", con.String())
	}
}

// TestSysRebootDiesWithTheFirmware: a Sys.Reboot scheduled by the firmware
// does not pull the chip out of download mode when a SYNC reset it first.
func TestSysRebootDiesWithTheFirmware(t *testing.T) {
	d := newSerialDevice(t, t.TempDir(), nil)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	call(t, dial(t, "ws://"+d.HTTPAddr()+"/rpc"), "Sys.Reboot", map[string]any{"delay_ms": 200})
	h := openROMHost(t, d)
	h.sync()
	time.Sleep(400 * time.Millisecond)
	if !d.InDownloadMode() {
		t.Fatal("the firmware's scheduled reboot left download mode")
	}
	h.readReg(0x40001000)
}
