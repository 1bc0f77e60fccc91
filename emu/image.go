package emu

import (
	"encoding/binary"
	"time"
)

// Firmware identity reported in the boot banner and Sys.GetInfo.
const (
	AppName   = "mosemu"
	FWVersion = "1.0"
	MGVersion = "2.20.0"
	MGID      = "20230101-000000/2.20.0-mosemu"
)

// espImage builds a minimal valid ESP32 application image (header, one DROM
// segment holding an esp_app_desc_t, checksum), so that a flash dump of a
// factory device shows what tools expect at the bootloader and app offsets.
func espImage(entry, loadAddr uint32, project, version string, built time.Time) []byte {
	desc := make([]byte, 256)
	binary.LittleEndian.PutUint32(desc[0:], 0xABCD5432) // ESP_APP_DESC_MAGIC_WORD
	copy(desc[16:48], version)
	copy(desc[48:80], project)
	copy(desc[80:96], built.UTC().Format("15:04:05"))
	copy(desc[96:112], built.UTC().Format("Jan _2 2006"))
	copy(desc[112:144], "v4.4.4")

	img := []byte{0xE9, 1, 2, 0x20} // magic, 1 segment, DIO, 4MB@40MHz
	img = binary.LittleEndian.AppendUint32(img, entry)
	img = append(img, 0xEE, 0, 0, 0) // WP pin, SPI pin drive
	img = append(img, 0, 0, 0)       // chip id ESP32, min revision
	img = append(img, make([]byte, 8)...)
	img = append(img, 0) // no SHA-256 appended
	img = binary.LittleEndian.AppendUint32(img, loadAddr)
	img = binary.LittleEndian.AppendUint32(img, uint32(len(desc)))
	img = append(img, desc...)
	sum := byte(0xEF)
	for _, b := range desc {
		sum ^= b
	}
	for (len(img)+1)%16 != 0 {
		img = append(img, 0)
	}
	return append(img, sum)
}
