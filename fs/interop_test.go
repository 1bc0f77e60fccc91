package fs

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/spf13/afero"
)

// TestImageMadeByReferenceLittlefs mounts a 256 KiB image formatted and
// written by the reference C littlefs (v2.x, block 4096, prog 16): a file, a
// directory holding a 10 KiB CTZ file, and a file created then removed.
func TestImageMadeByReferenceLittlefs(t *testing.T) {
	fz, err := os.Open("testdata/made-by-littlefs-c.img.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer fz.Close()
	zr, err := gzip.NewReader(fz)
	if err != nil {
		t.Fatal(err)
	}
	img, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	dev := flash.NewMemory(int64(len(img)))
	dev.WriteAt(img, 0)
	f, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := afero.ReadFile(f, "/conf9.json")
	if err != nil || string(conf) != `{"device":{"id":"esp32_C0FFEE"}}` {
		t.Fatalf("conf9.json = %q, %v", conf, err)
	}
	data, err := afero.ReadFile(f, "/www/data.bin")
	if err != nil || fmt.Sprintf("%x", md5.Sum(data)) != "c3cd26e07e555c0116db237fbc06d99c" {
		t.Fatalf("www/data.bin: %d bytes, %v", len(data), err)
	}
	if _, err := f.Stat("/tmp.txt"); err == nil {
		t.Fatal("removed file visible")
	}
	// We can write to it, and read back after remount.
	if err := afero.WriteFile(f, "/www/new.txt", bytes.Repeat([]byte("x"), 5000), 0); err != nil {
		t.Fatal(err)
	}
	f2, err := Mount(dev)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := afero.ReadFile(f2, "/www/new.txt"); len(got) != 5000 {
		t.Fatalf("new file has %d bytes", len(got))
	}
	if got, _ := afero.ReadFile(f2, "/www/data.bin"); !bytes.Equal(got, data) {
		t.Fatal("existing file damaged by our write")
	}
}
