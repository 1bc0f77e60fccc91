package emu

import "fmt"

// Board describes the fixed hardware of an emulated module.
type Board struct {
	Arch      string // "esp32" or "esp8266", as Sys.GetInfo reports it
	FlashSize int64  // SPI flash size in bytes
	// RAMSize is the heap the firmware reports as total after boot and
	// RAMFreeAtBoot what is free once Mongoose OS is up (public figures of
	// typical Mongoose OS builds: ESP32 ~ 290 KB total, ESP8266 ~ 52 KB).
	RAMSize, RAMFreeAtBoot int
	// HeapReserve is what the SDK and the rest of the firmware keep: a
	// connection whose buffers would eat into it is refused.
	HeapReserve int
	CPUMHz      int
	// FSOffset and FSSize locate the root filesystem when the board has no
	// ESP partition table (ESP8266 rBoot layout).
	FSOffset, FSSize int64
	// HasPartitionTable is true for ESP32 (table at 0x8000).
	HasPartitionTable bool
	// HasEfuses is true when the chip has an efuse controller (ESP32); the
	// ESP8266 only has OTP MAC words and no flash encryption.
	HasEfuses bool
	// SDK is printed in the boot banner.
	SDK string
}

// BoardFor returns the board profile for arch.
func BoardFor(arch string) (Board, error) {
	switch arch {
	case "", "esp32":
		return Board{
			Arch: "esp32", FlashSize: 4 << 20, RAMSize: 294_000, RAMFreeAtBoot: 214_000, HeapReserve: 16 * 1024, CPUMHz: 160,
			HasPartitionTable: true, HasEfuses: true, SDK: "ESP-IDF v4.4.4",
		}, nil
	case "esp8266":
		return Board{
			// ~45 KiB free after init: one TLS connection with static
			// 16 KiB record buffers fits, a second does not.
			Arch: "esp8266", FlashSize: 4 << 20, RAMSize: 52_000, RAMFreeAtBoot: 46_000, HeapReserve: 4 * 1024, CPUMHz: 160,
			FSOffset: 0x8000, FSSize: 0x40000, SDK: "NONOS SDK " + SDK8266,
		}, nil
	}
	return Board{}, fmt.Errorf("unknown arch %q (want esp32 or esp8266)", arch)
}
