// Package rboot is the ESP8266 boot chain as Mongoose OS builds it: the
// flash layout (rBoot at 0x0, its config sector, two app slots, two
// filesystems, RF calibration and SDK system parameters), the rBoot config
// sector format, and ESP8266 firmware images (ESP8266 "v1" images the ROM
// loads and rBoot "v2" app images with the irom0 section first), as
// cesanta/mongoose-os platforms/esp8266 (Makefile.build, rboot/) defines
// them.
package rboot

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Fixed flash positions (platforms/esp8266/Makefile.build).
const (
	BootAddr       = 0x0    // rBoot itself
	ConfigAddr     = 0x7000 // BOOT_CONFIG_ADDR: the rBoot config sector
	SectorSize     = 0x1000
	RFCalSize      = 0x1000 // RF_CAL_DATA_SIZE
	SysParamsSize  = 0x4000 // SYS_PARAMS_SIZE
	imageHeaderLen = 0x10   // IMAGE_HEADER_SIZE, subtracted from the slot for ROM_SIZE
)

// rBoot config constants (rboot.h).
const (
	ConfigMagic   = 0xE1
	ConfigVersion = 0x01
	MaxROMs       = 4
	// ConfigSize is sizeof(rboot_config) without BOOT_CONFIG_CHKSUM.
	ConfigSize = 12 + 4*4*MaxROMs + 4
	// ModeGPIOROM selects rom gpio_rom while GPIO16 is low.
	ModeGPIOROM = 0x01
)

// Config is the rBoot config sector (rboot_config, Cesanta's variant with
// boot-attempt tracking and per-ROM filesystem addresses).
type Config struct {
	Mode         uint8
	CurrentROM   uint8
	GPIOROM      uint8
	Count        uint8
	PreviousROM  uint8
	IsFirstBoot  uint8 // set by an update, cleared when the app commits
	BootAttempts uint8
	FWUpdated    uint8
	ROMs         [MaxROMs]uint32 // flash addresses of the app images
	ROMSizes     [MaxROMs]uint32
	FSAddrs      [MaxROMs]uint32 // root filesystem of each app slot
	FSSizes      [MaxROMs]uint32
	UserFlags    uint32
}

// ErrNoConfig means the sector does not hold a valid config (blank flash,
// another magic or version): rBoot writes its defaults.
var ErrNoConfig = errors.New("rboot: no valid boot config")

// ParseConfig decodes a config sector (at least ConfigSize bytes).
func ParseConfig(b []byte) (Config, error) {
	if len(b) < ConfigSize || b[0] != ConfigMagic || b[1] != ConfigVersion {
		return Config{}, ErrNoConfig
	}
	c := Config{Mode: b[2], CurrentROM: b[3], GPIOROM: b[4], Count: b[5], PreviousROM: b[6],
		IsFirstBoot: b[7], BootAttempts: b[8], FWUpdated: b[9]}
	w := func(i int) uint32 { return binary.LittleEndian.Uint32(b[12+4*i:]) }
	for i := 0; i < MaxROMs; i++ {
		c.ROMs[i], c.ROMSizes[i] = w(i), w(MaxROMs+i)
		c.FSAddrs[i], c.FSSizes[i] = w(2*MaxROMs+i), w(3*MaxROMs+i)
	}
	c.UserFlags = w(4 * MaxROMs)
	return c, nil
}

// Marshal encodes c as rBoot stores it (ConfigSize bytes, padding zero).
func (c Config) Marshal() []byte {
	b := make([]byte, 12, ConfigSize)
	b[0], b[1], b[2], b[3], b[4], b[5] = ConfigMagic, ConfigVersion, c.Mode, c.CurrentROM, c.GPIOROM, c.Count
	b[6], b[7], b[8], b[9] = c.PreviousROM, c.IsFirstBoot, c.BootAttempts, c.FWUpdated
	for _, arr := range [][MaxROMs]uint32{c.ROMs, c.ROMSizes, c.FSAddrs, c.FSSizes} {
		for _, v := range arr {
			b = binary.LittleEndian.AppendUint32(b, v)
		}
	}
	return binary.LittleEndian.AppendUint32(b, c.UserFlags)
}

// Layout is where Mongoose OS puts things on an ESP8266 of a flash size.
type Layout struct {
	FlashSize int64
	// Default is the config rBoot writes when the sector is blank (its
	// FW1_ADDR, FW2_ADDR, FW1_FS_ADDR, FW2_FS_ADDR, FS_SIZE, FW_SIZE).
	Default   Config
	RFCal     uint32 // rf_cal_data
	SysParams uint32 // sys_params (esp_init_data_default + system parameters)
}

// LayoutFor returns the Mongoose OS layout for a 1, 2 or 4 MiB flash (the
// sizes platforms/esp8266/Makefile.build knows; bigger chips use the 4 MiB
// layout, as a FLASH_SIZE=4M build flashed on them would).
func LayoutFor(flashSize int64) (Layout, error) {
	l := Layout{FlashSize: flashSize}
	end := uint32(min(flashSize, 4<<20))
	l.SysParams = end - SysParamsSize
	l.RFCal = l.SysParams - RFCalSize
	c := Config{Count: 2}
	switch {
	case flashSize >= 4<<20:
		// 0x000000 rBoot, 0x7000 cfg, 0x8000 fs0 (256K), 0x100000 app0,
		// 0x200000 app1, 0x300000 fs1 (256K).
		c.ROMs[0], c.ROMs[1] = 0x100000, 0x200000
		c.FSAddrs[0], c.FSAddrs[1] = 0x8000, 0x300000
		c.FSSizes[0], c.FSSizes[1] = 0x40000, 0x40000
		c.ROMSizes[0], c.ROMSizes[1] = 0x100000-imageHeaderLen, 0x100000-imageHeaderLen
	case flashSize == 2<<20:
		// app0 0x8000, fs0 below the first MiB's rf/sys area; app1 and fs1
		// the same in the second MiB.
		fs := uint32(0x20000)
		c.ROMs[0], c.ROMs[1] = 0x8000, 0x108000
		c.FSAddrs[0] = 0x100000 - fs - RFCalSize - SysParamsSize
		c.FSAddrs[1] = 0x200000 - fs - RFCalSize - SysParamsSize
		c.FSSizes[0], c.FSSizes[1] = fs, fs
		size := 0x100000 - 0x8000 - fs - RFCalSize - SysParamsSize - imageHeaderLen
		c.ROMSizes[0], c.ROMSizes[1] = size, size
	case flashSize == 1<<20:
		fs := uint32(0x20000)
		c.ROMs[0] = 0x8000
		c.FSAddrs[0] = 0x100000 - fs - RFCalSize - SysParamsSize
		c.FSSizes[0], c.FSSizes[1] = fs, fs
		size := 0x100000 - 0x8000 - fs - RFCalSize - SysParamsSize - imageHeaderLen
		c.ROMSizes[0], c.ROMSizes[1] = size, size
	default:
		return Layout{}, fmt.Errorf("rboot: no Mongoose OS layout for a %d-byte flash", flashSize)
	}
	l.Default = c
	return l, nil
}
