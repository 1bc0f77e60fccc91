package testkit

import (
	"archive/zip"
	"bytes"
	"hash/crc32"
	"testing"
)

// ZipFile is one entry of a zip made by StoredZip.
type ZipFile struct {
	Name string
	Data []byte
}

// StoredZip returns a zip of files, in their order, stored (not
// compressed) with their sizes and CRC in the local headers, as mos and
// fw-bundle write firmware zips.
func StoredZip(t testing.TB, files ...ZipFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		w, err := zw.CreateRaw(&zip.FileHeader{Name: f.Name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(f.Data),
			CompressedSize64: uint64(len(f.Data)), UncompressedSize64: uint64(len(f.Data))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
