package factoryfs

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu/flash"
	lfs "github.com/mosemu/mosemu/fs"
	"github.com/spf13/afero"
)

func TestCABundleParses(t *testing.T) {
	n := 0
	for rest := CABundle; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			t.Errorf("certificate %d: %v", n, err)
		}
		n++
	}
	if n != 22 {
		t.Errorf("%d certificates, want the ca-bundle library's 22", n)
	}
}

func TestImageMounts(t *testing.T) {
	files, err := Files(configs.NewSchema("esp32"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := Image(0x40000, files)
	if err != nil {
		t.Fatal(err)
	}
	dev := flash.NewMemory(int64(len(img)))
	dev.WriteAt(img, 0)
	fsys, err := lfs.Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := afero.ReadFile(fsys, name)
		if err != nil || string(got) != string(want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// conf0.json loads as the defaults layer.
	l := &configs.Loader{FS: fsys, Schema: configs.NewSchema("esp32")}
	c, err := l.Load(9, false)
	if err != nil || !c.Bool("http.enable") || c.String("device.id") != "esp32_000000" {
		t.Errorf("load with conf0.json: %v", err)
	}
	img2, _ := Image(0x40000, files)
	if string(img) != string(img2) {
		t.Error("image is not deterministic")
	}
}

func BenchmarkImage(b *testing.B) {
	files, _ := Files(configs.NewSchema("esp32"))
	for b.Loop() {
		Image(0x40000, files)
	}
}
