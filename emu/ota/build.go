package ota

import (
	"crypto/ecdsa"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// AppImage builds a valid ESP32 application image: a DROM segment that
// starts with an esp_app_desc_t (project, version, build time), then a
// segment holding payload, the XOR checksum and no appended digest.
func AppImage(project, version string, built time.Time, payload []byte) []byte {
	desc := make([]byte, 256)
	binary.LittleEndian.PutUint32(desc, appDescMagic)
	copy(desc[16:48], version)
	copy(desc[48:80], project)
	copy(desc[80:96], built.UTC().Format("15:04:05"))
	copy(desc[96:112], built.UTC().Format("Jan _2 2006"))
	copy(desc[112:144], "v4.4.4")
	segs := [][]byte{desc}
	if len(payload) > 0 {
		segs = append(segs, payload)
	}
	img := []byte{ImageMagic, byte(len(segs)), 2, 0x20} // DIO, 4 MB @ 40 MHz
	img = binary.LittleEndian.AppendUint32(img, 0x40081000)
	img = append(img, 0xEE, 0, 0, 0, 0, 0, 0) // WP pin, drive, chip id ESP32, min rev
	img = append(img, make([]byte, 9)...)     // reserved, no SHA-256 appended
	sum := byte(0xEF)
	for i, seg := range segs {
		img = binary.LittleEndian.AppendUint32(img, uint32(0x3F400020+i*0x10000))
		img = binary.LittleEndian.AppendUint32(img, uint32(len(seg)))
		img = append(img, seg...)
		for _, b := range seg {
			sum ^= b
		}
	}
	for (len(img)+1)%16 != 0 {
		img = append(img, 0)
	}
	return append(img, sum)
}

// BundleSpec describes a firmware bundle.
type BundleSpec struct {
	Name, Platform, Version, BuildID string
	App                              []byte // app image, written to the inactive app slot
	FS                               []byte // filesystem image for the slot's fs partition
	AppFile, FSFile                  string // names in the archive (default <name>.bin, fs.img)
	// SignKeys sign the manifest: SignKeys[N] gives sigN (nil: none).
	SignKeys []*ecdsa.PrivateKey
}

// WriteBundle returns the firmware zip as `mos build` lays it out for OTA
// (WriteZip): manifest.json first with the parts' SHA-1 digests, then the
// app and fs images.
func WriteBundle(s BundleSpec) ([]byte, error) {
	if s.Name == "" || s.Platform == "" || s.Version == "" || s.BuildID == "" || len(s.App) == 0 || len(s.FS) == 0 {
		return nil, errors.New("bundle: name, platform, version, build_id, app and fs are required")
	}
	if s.AppFile == "" {
		s.AppFile = s.Name + ".bin"
	}
	if s.FSFile == "" {
		s.FSFile = "fs.img"
	}
	if s.AppFile == s.FSFile {
		return nil, errors.New("bundle: the app and fs files need different names")
	}
	digest := func(b []byte) string { h := sha1.Sum(b); return hex.EncodeToString(h[:]) }
	m := map[string]any{"name": s.Name, "platform": s.Platform, "version": s.Version, "build_id": s.BuildID,
		"build_timestamp": time.Now().UTC().Format(time.RFC3339),
		"parts": map[string]any{
			"app": map[string]any{"type": "app", "src": s.AppFile, "ptn": "app_0", "cs_sha1": digest(s.App)},
			"fs":  map[string]any{"type": "fs", "src": s.FSFile, "ptn": "fs_0", "cs_sha1": digest(s.FS)},
		}}
	manifest, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, err
	}
	extra, err := signatureExtra(manifest, s.SignKeys)
	if err != nil {
		return nil, err
	}
	return WriteZip(ZipDir(s.Name, s.Version), manifest, extra, map[string][]byte{s.AppFile: s.App, s.FSFile: s.FS})
}
