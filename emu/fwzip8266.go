package emu

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu/factoryfs"
	"github.com/mosemu/mosemu/emu/ota"
	"github.com/mosemu/mosemu/emu/rboot"
)

// Bundle8266 describes an ESP8266 firmware zip of the mosemu firmware.
type Bundle8266 struct {
	FlashSize int64     // selects the rBoot layout (0: 4 MiB)
	Name      string    // app name (default AppName)
	Version   string    // fw_version after an update (default FWVersion)
	BuildID   string    // fw_id after an update (default FWBuildID)
	Built     time.Time // build_timestamp (default now)
	// Files are put into the root filesystem image next to the factory
	// files (conf0.json, ca.pem), replacing those of the same name.
	Files map[string][]byte
}

// FirmwareZip8266 builds the mosemu firmware as a Mongoose OS ESP8266
// build packages it (platforms/esp8266/Makefile.build FW_PARTS, zipped by
// mgos_fw_meta.py create_fw), for `mos flash` and `mos ota`: the folder
// <name>-<version>/ holding manifest.json first, then fs.bin, <name>.bin
// and rboot.bin. The parts: rBoot at 0x0 ("boot"), a blank rBoot config
// sector ("boot_cfg"), the app for slot 0 with addr1 = slot 1 ("fw"), the
// root filesystem image with the factory files for fs0 with addr1 = fs1
// ("fs") and the erased RF calibration sector ("rf_cal_data"); each file
// with its size, SHA-1 and SHA-256. The SDK's esp_init_data
// ("sys_params") is left out: the emulated SDK does not read it. With the
// default name, version and build id the app is the factory build's image.
func FirmwareZip8266(b Bundle8266) ([]byte, error) {
	if b.FlashSize == 0 {
		b.FlashSize = 4 << 20
	}
	b.Name, b.Version, b.BuildID = orDefault(b.Name, AppName), orDefault(b.Version, FWVersion), orDefault(b.BuildID, FWBuildID)
	if b.Built.IsZero() {
		b.Built = time.Now()
	}
	if len(b.Name) > 40 { // <name>.bin must fit the updater's 49-byte file name
		return nil, errors.New("fw bundle: app name longer than 40 bytes")
	}
	lay, err := rboot.LayoutFor(b.FlashSize)
	if err != nil {
		return nil, err
	}
	c := lay.Default
	files, err := factoryfs.Files(configs.NewSchema("esp8266"))
	if err != nil {
		return nil, err
	}
	for name, data := range b.Files {
		files[name] = data
	}
	fsImg, err := factoryfs.Image(int64(c.FSSizes[0]), files)
	if err != nil {
		return nil, err
	}
	app := appImage8266(b.Name, b.Version, b.BuildID)
	if b.Name == AppName && b.Version == FWVersion && b.BuildID == FWBuildID {
		app = factoryApp8266() // the factory build: restores a board as it left the factory
	}
	appFile := b.Name + ".bin"
	data := map[string][]byte{
		"rboot.bin": rbootImage(),
		appFile:     app,
		"fs.bin":    fsImg,
	}
	// What create_manifest adds to a part with a src file.
	file := func(src string, attrs map[string]any) map[string]any {
		s1, s256 := sha1.Sum(data[src]), sha256.Sum256(data[src])
		attrs["src"], attrs["size"] = src, len(data[src])
		attrs["cs_sha1"], attrs["cs_sha256"] = hex.EncodeToString(s1[:]), hex.EncodeToString(s256[:])
		return attrs
	}
	manifest, err := ota.ManifestJSON(map[string]any{
		"name": b.Name, "platform": "esp8266", "version": b.Version, "build_id": b.BuildID,
		"build_timestamp": b.Built.UTC().Format("2006-01-02T15:04:05Z"),
		"parts": map[string]any{
			"boot":        file("rboot.bin", map[string]any{"addr": rboot.BootAddr, "update": false}),
			"boot_cfg":    map[string]any{"addr": rboot.ConfigAddr, "size": rboot.SectorSize, "fill": 0xFF},
			"fw":          file(appFile, map[string]any{"addr": c.ROMs[0], "addr1": c.ROMs[1]}),
			"fs":          file("fs.bin", map[string]any{"type": "fs", "addr": c.FSAddrs[0], "addr1": c.FSAddrs[1], "fs_size": c.FSSizes[0]}),
			"rf_cal_data": map[string]any{"addr": lay.RFCal, "size": rboot.RFCalSize, "fill": 0xFF},
		},
	})
	if err != nil {
		return nil, err
	}
	return ota.WriteZip(ota.ZipDir(b.Name, b.Version), manifest, nil, data)
}
