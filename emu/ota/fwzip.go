package ota

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"hash/crc32"
	"maps"
	"slices"
)

// ZipDir is the folder a `mos build` firmware zip keeps its files in:
// mgos_fw_meta.py create_fw names it <name>-<version>. The updater drops
// it (everything up to the first '/'), as mos flash does.
func ZipDir(name, version string) string { return name + "-" + version + "/" }

// WriteZip lays a firmware zip out as mgos_fw_meta.py create_fw does for
// `mos build` (and as the updater needs it): every entry stored, with its
// sizes and CRC-32 in the local header, under the folder dir;
// manifest.json first (manifestExtra in its extra field, where mos
// create-fw-bundle puts the signatures), then the parts' files sorted by
// name.
func WriteZip(dir string, manifest, manifestExtra []byte, files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, data, extra []byte) error {
		w, err := zw.CreateRaw(&zip.FileHeader{Name: dir + name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(data),
			CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(len(data)), Extra: extra})
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	if err := add("manifest.json", manifest, manifestExtra); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := add(name, files[name], nil); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ManifestJSON renders a manifest as mgos_fw_meta.py writes it
// (json.dumps(indent=2, sort_keys=True)): keys sorted, two-space indent,
// no HTML escaping, no trailing newline.
func ManifestJSON(m map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
