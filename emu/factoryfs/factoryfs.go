// Package factoryfs builds the filesystem image a Mongoose OS build ships in
// its fs partition (what `mos flash` writes): conf0.json with the config
// schema's defaults, and ca.pem, the CA bundle of the ca-bundle library that
// the CA-on-demand loader reads.
package factoryfs

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"maps"
	"slices"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu/flash"
	lfs "github.com/mosemu/mosemu/fs"
	"github.com/spf13/afero"
)

// CABundle is ca.pem: the root certificates the mongoose-os-libs/ca-bundle
// library ships (AWS, Google, Microsoft, DigiCert, ...), one PEM block each
// after a comment naming its subject and expiry.
//
//go:embed ca.pem
var CABundle []byte

// Files returns the files of the factory filesystem for a schema.
func Files(schema *configs.Schema) (map[string][]byte, error) {
	compact, err := configs.New(schema).JSON("")
	if err != nil {
		return nil, err
	}
	var conf0 bytes.Buffer
	if err := json.Indent(&conf0, compact, "", "  "); err != nil {
		return nil, err
	}
	conf0.WriteByte('\n')
	return map[string][]byte{"conf0.json": conf0.Bytes(), "ca.pem": CABundle}, nil
}

// Image returns a littlefs image of size bytes holding files.
func Image(size int64, files map[string][]byte) ([]byte, error) {
	dev := flash.NewMemory(size)
	if err := lfs.Format(dev); err != nil {
		return nil, err
	}
	fsys, err := lfs.Mount(dev)
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) { // deterministic image
		if err := afero.WriteFile(fsys, name, files[name], 0o644); err != nil {
			return nil, err
		}
	}
	if err := fsys.Unmount(); err != nil {
		return nil, err
	}
	img := make([]byte, size)
	if _, err := dev.ReadAt(img, 0); err != nil {
		return nil, err
	}
	return img, nil
}
