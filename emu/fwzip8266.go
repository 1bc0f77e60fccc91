package emu

import (
	"archive/zip"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/rboot"
	lfs "github.com/mosemu/mosemu/fs"
)

// fwPart is one part of a mos firmware bundle's manifest.json (mos
// common/fwbundle: name -> {src|fill+size, addr, checksums, ...}).
type fwPart struct {
	Type   string `json:"type,omitempty"`
	Src    string `json:"src,omitempty"`
	Addr   uint32 `json:"addr"`
	Addr1  uint32 `json:"addr1,omitempty"` // the second slot (OTA)
	Size   uint32 `json:"size,omitempty"`
	Fill   *uint8 `json:"fill,omitempty"`
	SHA1   string `json:"cs_sha1,omitempty"`
	SHA256 string `json:"cs_sha256,omitempty"`
	FSSize uint32 `json:"fs_size,omitempty"`
	data   []byte
}

// FirmwareZip8266 builds the mosemu firmware as a Mongoose OS ESP8266
// build packages it (platforms/esp8266/Makefile.build FW_PARTS), for `mos
// flash`: rBoot at 0x0, a blank rBoot config sector, the app for slot 0
// (addr1 = slot 1), an empty root filesystem image for fs0 (addr1 = fs1)
// and the erased RF calibration sector. The SDK's esp_init_data
// (sys_params) is left out: the emulated SDK does not read it.
func FirmwareZip8266(flashSize int64) ([]byte, error) {
	lay, err := rboot.LayoutFor(flashSize)
	if err != nil {
		return nil, err
	}
	c := lay.Default
	fsImg := flash.NewMemory(int64(c.FSSizes[0]))
	if err := lfs.Format(fsImg); err != nil {
		return nil, err
	}
	fsData := make([]byte, c.FSSizes[0])
	if _, err := fsImg.ReadAt(fsData, 0); err != nil {
		return nil, err
	}
	ff := uint8(0xFF)
	parts := map[string]*fwPart{
		"boot":        {Src: "rboot.bin", Addr: rboot.BootAddr, data: rbootImage()},
		"boot_cfg":    {Addr: rboot.ConfigAddr, Size: rboot.SectorSize, Fill: &ff},
		"fw":          {Src: AppName + ".bin", Addr: c.ROMs[0], Addr1: c.ROMs[1], data: appImage8266(AppName, FWVersion, MGID)},
		"fs":          {Type: "fs", Src: "fs.bin", Addr: c.FSAddrs[0], Addr1: c.FSAddrs[1], FSSize: c.FSSizes[0], data: fsData},
		"rf_cal_data": {Addr: lay.RFCal, Size: rboot.RFCalSize, Fill: &ff},
	}
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	dir := fmt.Sprintf("%s-esp8266-%s/", AppName, FWVersion)
	for _, name := range []string{"boot", "fw", "fs"} {
		p := parts[name]
		s1, s256 := sha1.Sum(p.data), sha256.Sum256(p.data)
		p.SHA1, p.SHA256 = hex.EncodeToString(s1[:]), hex.EncodeToString(s256[:])
		w, err := zw.Create(dir + p.Src)
		if err != nil {
			return nil, err
		}
		w.Write(p.data)
	}
	manifest := map[string]any{
		"name": AppName, "platform": "esp8266", "version": FWVersion, "build_id": MGID,
		"description": "mosemu firmware, Mongoose OS ESP8266 layout", "parts": parts,
	}
	m, err := json.MarshalIndent(manifest, "", " ")
	if err != nil {
		return nil, err
	}
	w, err := zw.Create(dir + "manifest.json")
	if err != nil {
		return nil, err
	}
	w.Write(m)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return zb.Bytes(), nil
}
