package main

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/factoryfs"
	"github.com/mosemu/mosemu/emu/ota"
	"github.com/mosemu/mosemu/emu/partition"
)

// fwBundleCmd builds a firmware zip the emulated ESP32 accepts over OTA,
// for trying `mos ota` without a Mongoose OS build.
func fwBundleCmd() *cobra.Command {
	var out, version, fsDir, name string
	var payload int
	var signKeys []string
	c := &cobra.Command{
		Use:   "fw-bundle",
		Short: "Build an ESP32 firmware bundle (fw.zip) for mos ota / OTA.Update",
		Long: `Build a firmware zip as mos build lays it out: manifest.json (platform esp32,
version, build_id, parts with SHA-1 digests), a valid ESP32 app image carrying the
version in its esp_app_desc_t, and a littlefs fs image with conf0.json, ca.pem and
the files of --fs (top level). After mos ota fw.zip the device reboots into it and
Sys.GetInfo reports its fw_version and fw_id.`,
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			built := time.Now().UTC()
			files, err := factoryfs.Files(configs.NewSchema("esp32"))
			if err != nil {
				return err
			}
			extra, err := readFSDir(fsDir)
			if err != nil {
				return err
			}
			maps.Copy(files, extra)
			fsPart, _ := partition.DefaultESP32().RootFS()
			fsImg, err := factoryfs.Image(int64(fsPart.Size), files)
			if err != nil {
				return fmt.Errorf("fs image: %w", err)
			}
			app := ota.AppImage(name, version, built, make([]byte, payload))
			buildID := built.Format("20060102-150405") + "/" + version + "@mosemu"
			keys, err := loadSignKeys(signKeys)
			if err != nil {
				return err
			}
			z, err := ota.WriteBundle(ota.BundleSpec{Name: name, Platform: "esp32", Version: version, BuildID: buildID, App: app, FS: fsImg, SignKeys: keys})
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, z, 0o644); err != nil {
				return err
			}
			fmt.Printf("%s: %s %s (%s), %d bytes\n", out, name, version, buildID, len(z))
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&out, "out", "o", "fw.zip", "output file")
	f.StringVar(&version, "version", "", "firmware version (fw_version after the update)")
	f.StringVar(&name, "name", emu.AppName, "app name")
	f.StringVar(&fsDir, "fs", "", "directory whose files go into the fs image")
	f.IntVar(&payload, "app-size", 64<<10, "bytes of code in the app image (bigger bundles, longer updates)")
	f.StringArrayVar(&signKeys, "sign-key", nil, "ECDSA P-256 private key (PEM) signing the manifest as sigN for the Nth --sign-key; an empty value skips N, as mos create-fw-bundle")
	c.MarkFlagRequired("version")
	return c
}

// readFSDir returns the files at the top level of dir ("" = none).
func readFSDir(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	if dir == "" {
		return files, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		files[e.Name()] = b
	}
	return files, nil
}

// loadSignKeys reads PEM EC private keys ("" leaves a slot unsigned).
func loadSignKeys(files []string) ([]*ecdsa.PrivateKey, error) {
	var keys []*ecdsa.PrivateKey
	for _, f := range files {
		if f == "" {
			keys = append(keys, nil)
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var key *ecdsa.PrivateKey
		for rest := b; key == nil; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				return nil, fmt.Errorf("%s: no EC private key", f)
			}
			switch blk.Type {
			case "EC PRIVATE KEY":
				key, err = x509.ParseECPrivateKey(blk.Bytes)
			case "PRIVATE KEY":
				var k any
				if k, err = x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
					var ok bool
					if key, ok = k.(*ecdsa.PrivateKey); !ok {
						err = errors.New("not an EC key")
					}
				}
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
		}
		keys = append(keys, key)
	}
	return keys, nil
}
