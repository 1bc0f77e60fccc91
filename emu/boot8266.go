package emu

import (
	"errors"
	"fmt"

	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/partition"
	"github.com/mosemu/mosemu/emu/rboot"
)

// The ESP8266 boot chain as Mongoose OS builds it: the ROM loads the v1
// image at 0x0 (rBoot), rBoot reads its config sector at 0x7000 (writing
// its defaults on a blank one), checks the app image of the selected slot
// and falls back to the other one, then the app (Mongoose OS on the NONOS
// SDK) starts with the root filesystem of its slot. The console lines are
// those of the ESP8266 ROM, of rBoot v1.2.1-cesanta1 (rboot.c find_image)
// and of platforms/esp8266/src/esp_main.c.

// SDK8266 is what system_get_sdk_version() returns in the Mongoose OS
// ESP8266 build (platforms/esp8266/sdk.version: esp8266-build 3.0.6_1391d154).
const SDK8266 = "3.0.6(1391d154)"

// errNoROM is a chip with nothing bootable in flash: it stays in the ROM
// (or rBoot) and answers only the ROM loader.
var errNoROM = errors.New("boot: no bootable image in flash; the chip waits in the ROM")

// boot8266 runs the ROM and rBoot from flash and prints the app's banner.
// It returns the root filesystem of the app slot that booted.
func (d *Device) boot8266() (partition.Entry, error) {
	raw := d.out.Raw
	lay, err := rboot.LayoutFor(d.board.FlashSize)
	if err != nil {
		return partition.Entry{}, err
	}
	d.printROMBanner(d.cause, false) // " ets Jan  8 2013,rst cause:2, boot mode:(3,6)"

	// ROM: the image at 0x0 must be a v1 image with a good checksum.
	boot, err := rboot.Check(d.flash, rboot.BootAddr, true)
	if errors.Is(err, rboot.ErrMagic) || err == nil && boot.V2 {
		raw("ets_main.c \n")
		return partition.Entry{}, errNoROM
	}
	printROMLoad(raw, boot)
	if err != nil {
		raw("csum err\nets_main.c \n")
		return partition.Entry{}, errNoROM
	}

	// rBoot.
	raw("\r\nrBoot v1.2.1-cesanta1 - richardaburton@gmail.com\r\n")
	raw("Flash Size:   " + rbootFlashSize(boot.SizeFreq>>4) + "\r\n")
	raw("Flash Mode:   " + rbootFlashMode(boot.Mode) + "\r\n")
	raw("Flash Speed:  " + rbootFlashSpeed(boot.SizeFreq&0x0F) + "\r\n")
	raw("rBoot Option: Big flash\r\n\r\n")
	sector := make([]byte, rboot.SectorSize)
	if _, err := d.flash.ReadAt(sector, rboot.ConfigAddr); err != nil {
		return partition.Entry{}, err
	}
	conf, err := rboot.ParseConfig(sector)
	if err != nil {
		raw(fmt.Sprintf("Writing default boot config @ 0x%x.\r\n", rboot.ConfigAddr))
		conf = lay.Default
		// rBoot zeroes the struct in its copy of the sector and writes the
		// whole sector back.
		copy(sector, make([]byte, rboot.ConfigSize))
		if err := d.writeRBootConfig(sector, conf); err != nil {
			return partition.Entry{}, err
		}
	}
	update := false
	rom := int(conf.CurrentROM)
	switch {
	case conf.CurrentROM >= conf.Count:
		raw("Invalid rom selected, defaulting.\r\n")
		rom, conf.CurrentROM, conf.FWUpdated, conf.IsFirstBoot = 0, 0, 0, 0
		update = true
	case conf.IsFirstBoot != 0:
		raw(fmt.Sprintf("First boot, attempt %d\n", conf.BootAttempts))
		if conf.BootAttempts == 0 {
			raw("Boot is unconfirmed\r\n")
			conf.BootAttempts++
		} else {
			raw(fmt.Sprintf("Boot failed, fallback to fw #%d\r\n", conf.PreviousROM))
			conf.CurrentROM = conf.PreviousROM
			conf.FWUpdated, conf.BootAttempts = 0, 0
		}
		update = true
		rom = int(conf.CurrentROM)
	}
	for {
		if _, err := rboot.Check(d.flash, romAddr(conf, rom), false); err == nil {
			break
		}
		raw(fmt.Sprintf("Rom %d is bad.\r\n", rom))
		update = true
		if rom--; rom < 0 {
			rom = int(conf.Count) - 1
		}
		if rom == int(conf.CurrentROM) || conf.Count == 0 {
			raw("No good rom available.\r\n")
			return partition.Entry{}, errNoROM
		}
	}
	if update {
		conf.CurrentROM = uint8(rom)
		if err := d.writeRBootConfig(sector, conf); err != nil {
			return partition.Entry{}, err
		}
	}
	raw(fmt.Sprintf("Booting rom %d (0x%x).\r\n", rom, romAddr(conf, rom)))

	// The app: Mongoose OS prints its banner once the UART is set up, after
	// the updater's early init (boot.go, bootBanner8266).
	if conf.IsFirstBoot != 0 && conf.CurrentROM == uint8(rom) && !d.updatePending() {
		// The new firmware came up: Mongoose OS commits it (no commit
		// timeout configured), so the next boot is a normal one. An
		// update of the OTA service commits through it (ota8266.go).
		conf.IsFirstBoot, conf.BootAttempts = 0, 0
		if err := d.writeRBootConfig(sector, conf); err != nil {
			return partition.Entry{}, err
		}
	}
	fs := partition.Entry{Type: partition.TypeData, Subtype: partition.SubSPIFFS,
		Label: fmt.Sprintf("fs%d", rom)}
	if rom < rboot.MaxROMs {
		fs.Offset, fs.Size = conf.FSAddrs[rom], conf.FSSizes[rom]
	}
	if fs.Size == 0 || int64(fs.Offset)+int64(fs.Size) > d.board.FlashSize || fs.Offset%flash.SectorSize != 0 {
		return partition.Entry{}, fmt.Errorf("boot: rBoot config gives rom %d no usable filesystem (0x%x, %d bytes); not booting", rom, fs.Offset, fs.Size)
	}
	return fs, nil
}

// romAddr is rBoot's roms[i]; an index past the array reads as unset.
func romAddr(c rboot.Config, i int) uint32 {
	if i < 0 || i >= rboot.MaxROMs {
		return 0xFFFFFFFF
	}
	return c.ROMs[i]
}

// writeRBootConfig erases the config sector and writes conf over the rest
// of the sector as rBoot read it.
func (d *Device) writeRBootConfig(sector []byte, conf rboot.Config) error {
	copy(sector, conf.Marshal())
	if err := d.flash.Erase(rboot.ConfigAddr, rboot.SectorSize); err != nil {
		return err
	}
	_, err := d.flash.WriteAt(sector, rboot.ConfigAddr)
	return err
}

// printROMLoad prints the ESP8266 ROM's segment-loading lines: each
// segment's length, the room left in the ROM's 16-byte read buffer, the
// tail that spills over, the running checksum; then the stored checksum.
func printROMLoad(raw func(string), img rboot.Checked) {
	room := 16
	for _, s := range img.Segments {
		tail := ((int(s.Len)-room)%16 + 16) % 16
		raw(fmt.Sprintf("load 0x%08x, len %d, room %d \ntail %d\nchksum 0x%02x\n", s.Addr, s.Len, room, tail, s.Sum))
		if room = 16 - tail - 8; room < 0 {
			raw(fmt.Sprintf("ho 0 tail %d room %d\n", tail, 16-tail))
			room += 16
		}
	}
	raw(fmt.Sprintf("csum 0x%02x\n", img.Checksum))
}

func rbootFlashSize(code byte) string {
	switch code {
	case 0:
		return "4 Mbit"
	case 1:
		return "2 Mbit"
	case 2:
		return "8 Mbit"
	case 3:
		return "16 Mbit"
	case 4:
		return "32 Mbit"
	case 8:
		return "64 Mbit"
	case 9:
		return "128 Mbit"
	}
	return "unknown"
}

func rbootFlashMode(m byte) string {
	if m < 4 {
		return [...]string{"QIO", "QOUT", "DIO", "DOUT"}[m]
	}
	return "unknown"
}

func rbootFlashSpeed(code byte) string {
	switch code {
	case 0:
		return "40 MHz"
	case 1:
		return "26.7 MHz"
	case 2:
		return "20 MHz"
	case 0x0F:
		return "80 MHz"
	}
	return "unknown"
}

// banner8266 prints what platforms/esp8266/src/esp_main.c logs when
// Mongoose OS starts on the NONOS SDK (no FreeRTOS on this port): the heap
// before mgos_init, which then takes what its services need.
func (d *Device) banner8266(app, version, buildID string) {
	l := d.log
	d.out.Print("", "")
	l.Info(fmt.Sprintf("%s %s (%s)", app, version, buildID), console.Src("esp_main.c", 158))
	l.Info(fmt.Sprintf("Mongoose OS %s (%s)", MGVersion, MGID), console.Src("esp_main.c", 160))
	l.Info(fmt.Sprintf("CPU: ESP8266EX, %d MHz, RAM: %d total, %d free", d.board.CPUMHz, d.board.RAMSize, d.board.RAMFreeAtBoot+earlyHeap8266), console.Src("esp_main.c", 161))
	l.Info(fmt.Sprintf("SDK %s; flash: %dM", SDK8266, d.board.FlashSize>>20), console.Src("esp_main.c", 165))
}

// earlyHeap8266 is the heap mgos_init's services (config, RPC, HTTP, the
// UART channel) take after esp_main.c has printed the free heap.
const earlyHeap8266 = 4 * 1024

// factoryImage8266 is what `mos flash` of a Mongoose OS ESP8266 build
// leaves on a chip of flashSize bytes besides the fs: rBoot at 0x0, a
// blank config sector (rBoot writes its defaults on first boot), the app
// in slot 0, RF calibration and system parameter sectors erased.
func factoryImage8266(flashSize int64) ([]factoryWrite, error) {
	lay, err := rboot.LayoutFor(flashSize)
	if err != nil {
		return nil, err
	}
	return []factoryWrite{
		{int64(rboot.BootAddr), rbootImage()},
		{int64(lay.Default.ROMs[0]), factoryApp8266()},
	}, nil
}

// rbootImage is a stand-in for rboot.bin: a v1 image with rBoot's load
// layout (its code in IRAM, its strings in DRAM) and a valid checksum. The
// emulator runs rBoot's logic itself; the bytes make a flash dump, esptool
// image_info and the ROM's checks see what a real board holds.
func rbootImage() []byte {
	text := []byte("mosemu stand-in for rBoot v1.2.1-cesanta1 (find_image, check_image, stage2a)\x00")
	strs := []byte("\r\nrBoot v1.2.1-cesanta1 - richardaburton@gmail.com\r\n\x00")
	return rboot.BuildV1(rboot.ModeDIO, rboot.SizeFreq4MB80, 0x40100004, []rboot.Segment{
		{Addr: 0x40100000, Data: text},
		{Addr: 0x3FFE8000, Data: strs},
	})
}

// factoryApp8266 is the app image of the factory build.
func factoryApp8266() []byte { return appImage8266(AppName, FWVersion, MGID) }

// appImage8266 is a stand-in for the Mongoose OS app image esptool2
// -boot2 builds: the v2 header, irom0 (flash-mapped code, here the build
// identity), then IRAM code, data and rodata in a v1 image.
func appImage8266(app, version, buildID string) []byte {
	id := []byte(fmt.Sprintf("%s %s (%s)\x00", app, version, buildID))
	return rboot.BuildV2(rboot.ModeDIO, rboot.SizeFreq4MB80, 0x40100004, id, []rboot.Segment{
		{Addr: 0x40100000, Data: []byte("mosemu stand-in for the Mongoose OS ESP8266 IRAM text\x00")},
		{Addr: 0x3FFE8000, Data: []byte(MGID + "\x00")},
		{Addr: 0x3FFE8000 + uint32(len(MGID)+1+3)&^3, Data: id},
	})
}
