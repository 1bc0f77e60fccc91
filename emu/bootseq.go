package emu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"strings"
	"time"

	"github.com/mosemu/mosemu/emu/partition"
)

// The chip's way from reset to the application: the boot ROM, strapped
// for SPI flash boot, loads the 2nd-stage bootloader from 0x1000; the
// bootloader reads the partition table, checks and loads the app, which is
// the Mongoose OS firmware. Each stage prints what the real one prints and
// fails the way it does; a failing stage makes the chip reset again (a boot
// loop, paced at bootLoopDelay instead of the real chip's flood so that the
// console stays readable) until a tool puts it in download mode.

// resetCause is the ESP32 RESET_REASON the ROM prints after "rst:".
type resetCause int

// Reset causes the emulated chip goes through.
const (
	resetPowerOn     resetCause = 0x01 // EN pin / power-on
	resetSoftware    resetCause = 0x03 // bootloader_reset()
	resetSoftwareCPU resetCause = 0x0C // esp_restart(): Sys.Reboot, abort
	resetRTCWDT      resetCause = 0x10 // the RTC watchdog ends a ROM boot loop
)

func (c resetCause) String() string {
	switch c {
	case resetPowerOn:
		return "POWERON_RESET"
	case resetSoftware:
		return "SW_RESET"
	case resetSoftwareCPU:
		return "SW_CPU_RESET"
	case resetRTCWDT:
		return "RTCWDT_RTC_RESET"
	}
	return "NO_MEAN"
}

// esp8266Cause is the ESP8266 ROM's "rst cause" number for a reset.
func (c resetCause) esp8266Cause() int {
	switch c {
	case resetRTCWDT:
		return 4 // watchdog
	default:
		return 2 // EN pin reset (USB-serial boards) and software restarts
	}
}

// bootLoopDelay paces a boot loop.
const bootLoopDelay = 2 * time.Second

// BootError is why a boot stopped: the stage that failed and its reason.
// The chip then loops through resets (or waits in the ROM loader).
type BootError struct {
	Stage  string     // "ROM", "bootloader" or "firmware"
	Reason string     // as the stage printed it
	next   resetCause // the reset that starts the next iteration of the loop; 0: the chip halts
	err    error      // the underlying error, if any
}

// Unwrap returns the underlying error (e.g. ErrHostBind).
func (f *BootError) Unwrap() error { return f.err }

func (f *BootError) Error() string {
	if f.next == 0 {
		return fmt.Sprintf("%s: %s (halted)", f.Stage, f.Reason)
	}
	return fmt.Sprintf("%s: %s (boot loop, next reset %s)", f.Stage, f.Reason, f.next)
}

// errEncryptionDone ends the boot that encrypted the flash: the bootloader
// resets the chip with encryption enabled.
var errEncryptionDone = errors.New("flash encryption completed: resetting")

// printROMBanner prints the ROM's first lines after a reset: the SPI boot
// strapping, or download mode (GPIO0 low) with "waiting for download".
func (d *Device) printROMBanner(cause resetCause, download bool) {
	if d.board.Arch == "esp8266" {
		mode := "(3,6)" // SPI flash boot
		if download {
			mode = "(1,7)" // UART download
		}
		d.out.Raw(fmt.Sprintf("\n ets Jan  8 2013,rst cause:%d, boot mode:%s\n\n", cause.esp8266Cause(), mode))
		return
	}
	boot := "boot:0x13 (SPI_FAST_FLASH_BOOT)"
	if download {
		boot = "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
	}
	d.out.Raw(fmt.Sprintf("ets Jun  8 2016 00:22:57\n\nrst:0x%x (%s),%s\n", int(cause), cause, boot))
	if download {
		d.out.Raw("waiting for download\n")
	}
}

// romBootESP32 is the ROM's SPI boot: it loads the 2nd-stage bootloader
// image at 0x1000 through the flash cache (decrypted when FLASH_CRYPT_CNT
// is odd). A bad magic gives the famous "invalid header" loop.
func (d *Device) romBootESP32() error {
	d.printROMBanner(d.cause, false)
	img, ierr := parseImage(d.cpuView(true), 0x1000, 0x7000)
	if ierr != nil {
		if ierr.badMagic {
			line := fmt.Sprintf("invalid header: 0x%08x", ierr.magic)
			d.out.Raw(line + "\n")
			return &BootError{Stage: "ROM", Reason: line, next: resetRTCWDT}
		}
		d.out.Raw("flash read err, 1000\nets_main.c 371 \n")
		return &BootError{Stage: "ROM", Reason: "cannot load the bootloader at 0x1000: " + ierr.msg, next: resetRTCWDT}
	}
	var b strings.Builder
	b.WriteString("configsip: 0, SPIWP:0xee\n")
	b.WriteString("clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\n")
	fmt.Fprintf(&b, "mode:%s, clock div:%d\n", spiModeName(img.Mode), clockDiv(img.SizeFreq))
	for _, s := range img.Segments {
		fmt.Fprintf(&b, "load:0x%08x,len:%d\n", s.Addr, s.Len)
	}
	fmt.Fprintf(&b, "entry 0x%08x\n", img.Entry)
	d.out.Raw(b.String())
	return nil
}

func spiModeName(m byte) string {
	switch m {
	case 0:
		return "QIO"
	case 1:
		return "QOUT"
	case 2:
		return "DIO"
	case 3:
		return "DOUT"
	}
	return "FAST_READ"
}

func clockDiv(sizeFreq byte) int {
	switch sizeFreq & 0xF {
	case 0x0: // 40 MHz
		return 2
	case 0x1: // 26 MHz
		return 3
	case 0x2: // 20 MHz
		return 4
	case 0xF: // 80 MHz
		return 1
	}
	return 2
}

// idfLog prints the 2nd-stage bootloader's ESP_LOG lines, "I (29) tag: msg",
// with a millisecond counter that advances as the real one roughly does.
type idfLog struct {
	d  *Device
	ms int
}

func (l *idfLog) line(level, tag, format string, args ...any) {
	l.d.out.Raw(fmt.Sprintf("%s (%d) %s: %s\n", level, l.ms, tag, fmt.Sprintf(format, args...)))
	l.ms += 5
}

func (l *idfLog) info(tag, format string, args ...any) { l.line("I", tag, format, args...) }
func (l *idfLog) err(tag, format string, args ...any)  { l.line("E", tag, format, args...) }

// partitionUsage is the bootloader's description of a partition type.
func partitionUsage(e partition.Entry) string {
	if e.Type == partition.TypeApp {
		switch {
		case e.Subtype == partition.SubFactory:
			return "factory app"
		case e.Subtype >= 0x10 && e.Subtype < 0x20:
			return "OTA app"
		case e.Subtype == 0x20:
			return "test app"
		}
		return "Unknown app"
	}
	switch e.Subtype {
	case partition.SubOTAData:
		return "OTA data"
	case partition.SubPHY:
		return "RF data"
	case partition.SubNVS:
		return "WiFi data"
	case 0x04:
		return "NVS keys"
	case 0x05:
		return "efuse"
	}
	return "Unknown data"
}

// bootloaderESP32 is the ESP-IDF v4.4 2nd-stage bootloader: partition
// table, first-boot flash encryption, app image verification. It returns
// the table and the app partition it loaded.
func (d *Device) bootloaderESP32() (partition.Table, partition.Entry, error) {
	l := &idfLog{d: d, ms: 29}
	l.info("boot", "ESP-IDF v4.4.4 2nd stage bootloader")
	l.ms = 29
	l.info("boot", "compile time 00:00:00")
	l.ms = 29
	l.info("boot", "chip revision: %d", d.chipRevision())
	l.info("boot_comm", "chip revision: %d, min. bootloader chip revision: 0", d.chipRevision())
	var hdr [4]byte
	d.cpuView(true).ReadAt(hdr[:], 0x1000)
	l.info("boot.esp32", "SPI Speed      : %s", spiSpeedName(hdr[3]))
	l.info("boot.esp32", "SPI Mode       : %s", spiModeName(hdr[2]))
	l.info("boot.esp32", "SPI Flash Size : %dMB", d.board.FlashSize>>20)
	l.info("boot", "Enabling RNG early entropy source...")
	l.info("boot", "Partition Table:")

	raw := make([]byte, partition.TableSize)
	if _, err := d.cpuView(true).ReadAt(raw, partition.Offset); err != nil {
		return nil, partition.Entry{}, err
	}
	table, err := partition.Parse(raw)
	if err != nil {
		if errors.Is(err, partition.ErrBadMD5) {
			l.err("flash_parts", "Partition table MD5 mismatch")
		} else {
			i := 0 // the first entry that is neither a partition nor the MD5 entry
			for ; i < partition.TableSize/32-1; i++ {
				if m := binary.LittleEndian.Uint16(raw[32*i:]); m != 0x50AA && m != 0xEBEB {
					break
				}
			}
			l.err("flash_parts", "partition %d invalid magic number 0x%x", i, binary.LittleEndian.Uint16(raw[32*i:]))
		}
		l.err("boot", "Failed to verify partition table")
		l.err("boot", "load partition table error!")
		return nil, partition.Entry{}, &BootError{Stage: "bootloader", Reason: "failed to verify partition table: " + err.Error(), next: resetSoftware}
	}
	l.info("boot", "## Label            Usage          Type ST Offset   Length")
	for i, e := range table {
		l.info("boot", "%2d %-16s %-16s %02x %02x %08x %08x", i, e.Label, partitionUsage(e), e.Type, e.Subtype, e.Offset, e.Size)
	}
	l.info("boot", "End of partition table")

	for _, app := range d.bootOrder(l, table) {
		img, ierr := parseImage(d.cpuView(true), int64(app.Offset), int64(app.Size))
		if ierr != nil {
			l.err("esp_image", "%s", ierr.msg)
			if app.Subtype >= 0x10 && app.Subtype < 0x20 {
				l.err("boot", "OTA app partition slot %d is not bootable", app.Subtype-0x10)
			} else {
				l.err("boot", "Factory app partition is not bootable")
			}
			continue
		}
		l.info("boot_comm", "chip revision: %d, min. application chip revision: 0", d.chipRevision())
		for i, s := range img.Segments {
			kind := "load"
			if s.Addr >= 0x3F400000 && s.Addr < 0x3F800000 || s.Addr >= 0x400D0000 && s.Addr < 0x40400000 {
				kind = "map"
			}
			l.info("esp_image", "segment %d: paddr=%08x vaddr=%08x size=%05xh (%6d) %s", i, s.FOff, s.Addr, s.Len, s.Len, kind)
		}
		if err := d.bootloaderEncrypt(l, table); err != nil {
			return nil, partition.Entry{}, err
		}
		l.info("boot", "Loaded app from partition at offset 0x%x", app.Offset)
		l.info("boot", "Disabling RNG early entropy source...")
		return table, app, nil
	}
	l.err("boot", "No bootable app partitions in the partition table")
	return nil, partition.Entry{}, &BootError{Stage: "bootloader", Reason: "no bootable app partition", next: resetSoftware}
}

// bootOrder is the order in which the bootloader tries the apps: the OTA
// slot otadata selects (the valid entry with the highest sequence number,
// slot = (seq-1) mod the number of OTA apps), else the factory app, else
// OTA 0; then the others.
func (d *Device) bootOrder(l *idfLog, table partition.Table) []partition.Entry {
	var factory, ota []partition.Entry
	for _, e := range table {
		switch {
		case e.Type != partition.TypeApp:
		case e.Subtype >= 0x10 && e.Subtype < 0x20:
			ota = append(ota, e)
		default:
			factory = append(factory, e)
		}
	}
	var first []partition.Entry
	if seq, ok := d.otaSequence(table); ok && len(ota) > 0 {
		first = append(first, ota[(seq-1)%uint32(len(ota))])
	} else if len(factory) > 0 {
		l.info("boot", "Defaulting to factory image")
		first = append(first, factory[0])
	} else if len(ota) > 0 {
		l.info("boot", "No factory image, trying OTA 0")
		first = append(first, ota[0])
	}
	order := first
	for _, e := range append(factory, ota...) {
		if len(first) == 0 || e != first[0] {
			order = append(order, e)
		}
	}
	return order
}

// otaSequence reads the two otadata entries (esp_ota_select_entry_t:
// ota_seq, label, state, crc32 of ota_seq) and returns the highest valid
// sequence number.
func (d *Device) otaSequence(table partition.Table) (uint32, bool) {
	var otadata partition.Entry
	found := false
	for _, e := range table {
		if e.Type == partition.TypeData && e.Subtype == partition.SubOTAData {
			otadata, found = e, true
			break
		}
	}
	if !found || otadata.Size < 2*partition.SectorSize {
		return 0, false
	}
	var best uint32
	ok := false
	for i := int64(0); i < 2; i++ {
		var ent [32]byte
		d.cpuView(otadata.Encrypted()).ReadAt(ent[:], int64(otadata.Offset)+i*partition.SectorSize)
		seq := binary.LittleEndian.Uint32(ent[0:])
		if seq == 0xFFFFFFFF || seq == 0 || crc32.Update(0xFFFFFFFF, crc32.IEEETable, ent[0:4]) != binary.LittleEndian.Uint32(ent[28:]) {
			continue
		}
		if !ok || seq > best {
			best, ok = seq, true
		}
	}
	return best, ok
}

func spiSpeedName(sizeFreq byte) string {
	switch sizeFreq & 0xF {
	case 0x1:
		return "26.7MHz"
	case 0x2:
		return "20MHz"
	case 0xF:
		return "80MHz"
	}
	return "40MHz"
}

// chipRevision is the ESP32 revision the efuses give (rev1 on the factory chip).
func (d *Device) chipRevision() int {
	if d.efuses == nil {
		return 0
	}
	r1, _ := d.efuses.Value("CHIP_VER_REV1")
	r2, _ := d.efuses.Value("CHIP_VER_REV2")
	switch {
	case r1 == 1 && r2 == 1:
		return 2
	case r1 == 1:
		return 1
	}
	return 0
}

// plaintextFlashesLeft is what the bootloader reports with encryption on.
func (d *Device) plaintextFlashesLeft() int {
	return (7 - bits.OnesCount8(d.efuses.FlashCryptCnt())) / 2
}
