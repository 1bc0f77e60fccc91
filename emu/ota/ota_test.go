package ota

import (
	"archive/zip"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/internal/testkit"
)

func TestOTASeqCRC(t *testing.T) {
	// otatool.py: binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)
	for seq, want := range map[uint32]uint32{1: 0x4743989A, 2: 0x55F63774, 3: 0xED4A5011} {
		if got := otaSeqCRC(seq); got != want {
			t.Errorf("crc(%d) = %#x, want %#x", seq, got, want)
		}
	}
}

func TestSetBootSlotSequence(t *testing.T) {
	dev := flash.NewMemory(2 * flash.SectorSize)
	if _, ok := BootSlot(dev, 2); ok {
		t.Fatal("blank otadata selects a slot")
	}
	for i, step := range []struct {
		slot           int
		wantSeq        uint32
		wantSector     int
		wantActiveSlot int
	}{{1, 2, 0, 1}, {0, 3, 1, 0}, {1, 4, 0, 1}, {1, 4, 1, 1}} {
		if err := SetBootSlot(dev, step.slot, 2); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 32)
		dev.ReadAt(b, int64(step.wantSector)*flash.SectorSize)
		if seq := binary.LittleEndian.Uint32(b); seq != step.wantSeq {
			t.Errorf("step %d: sector %d seq = %d, want %d", i, step.wantSector, seq, step.wantSeq)
		}
		if s, ok := BootSlot(dev, 2); !ok || s != step.wantActiveSlot {
			t.Errorf("step %d: boot slot %d %v", i, s, ok)
		}
	}
	// A corrupt entry is ignored: the other one decides.
	dev.WriteAt([]byte{0}, 28) // clear bits of sector 0's CRC
	if s, ok := BootSlot(dev, 2); !ok || s != 1 {
		t.Errorf("with a corrupt entry: slot %d %v", s, ok)
	}
}

type recSink struct {
	events []string
	data   map[string][]byte
}

func (s *recSink) Manifest(m *Manifest) error {
	s.events = append(s.events, "manifest "+m.Version)
	return nil
}
func (s *recSink) FileBegin(fi FileInfo) (bool, error) {
	s.events = append(s.events, fmt.Sprintf("begin %s %d", fi.Name, fi.Size))
	return fi.Name != "skip.bin", nil
}
func (s *recSink) FileData(fi FileInfo, d []byte) error {
	if s.data == nil {
		s.data = map[string][]byte{}
	}
	s.data[fi.Name] = append(s.data[fi.Name], d...)
	return nil
}
func (s *recSink) FileEnd(fi FileInfo) error {
	s.events = append(s.events, "end "+fi.Name)
	return nil
}

// storedZip is a firmware zip of the files (name, content) in folder fw/.
func storedZip(t testing.TB, files ...[2]string) []byte {
	var entries []testkit.ZipFile
	for _, f := range files {
		entries = append(entries, testkit.ZipFile{Name: "fw/" + f[0], Data: []byte(f[1])})
	}
	return testkit.StoredZip(t, entries...)
}

const testManifest = `{"name":"x","platform":"esp32","version":"2.0","build_id":"b","parts":{"app":{"src":"app.bin","cs_sha1":"x"}}}`

func TestReaderAnyChunking(t *testing.T) {
	big := string(bytes.Repeat([]byte("0123456789abcdef"), 300))
	z := storedZip(t, [2]string{"manifest.json", testManifest}, [2]string{"app.bin", big}, [2]string{"skip.bin", "skipped"}, [2]string{"fs.img", "tail"})
	want := []string{"manifest 2.0", "begin app.bin 4800", "end app.bin", "begin skip.bin 7", "begin fs.img 4", "end fs.img"}
	for _, step := range []int{1, 7, 512, 1000, len(z)} {
		s := &recSink{}
		r := NewReader(s)
		for off := 0; off < len(z); off += step {
			if _, err := r.Write(z[off:min(off+step, len(z))]); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
		if !r.Done() || fmt.Sprint(s.events) != fmt.Sprint(want) || string(s.data["app.bin"]) != big || string(s.data["fs.img"]) != "tail" {
			t.Errorf("step %d: done=%v events %v", step, r.Done(), s.events)
		}
	}
}

func TestReaderRejects(t *testing.T) {
	var deflated bytes.Buffer
	zw := zip.NewWriter(&deflated)
	w, _ := zw.Create("manifest.json")
	w.Write([]byte(testManifest))
	zw.Close()
	badCRC := storedZip(t, [2]string{"manifest.json", testManifest}, [2]string{"app.bin", "data"})
	badCRC[bytes.Index(badCRC, []byte("data"))] ^= 1
	for name, z := range map[string][]byte{
		"compressed":      deflated.Bytes(),
		"manifest second": storedZip(t, [2]string{"app.bin", "x"}, [2]string{"manifest.json", testManifest}),
		"bad manifest":    storedZip(t, [2]string{"manifest.json", `{"platform":"esp32"}`}),
		"manifest json":   storedZip(t, [2]string{"manifest.json", `{`}),
		"bad CRC":         badCRC,
		"garbage":         []byte("PK\x05\x06not a local header at all......"),
	} {
		if _, err := NewReader(&recSink{}).Write(z); !errors.Is(err, ErrBundle) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Add(storedZip(f, [2]string{"manifest.json", testManifest}, [2]string{"app.bin", "data"}))
	f.Add([]byte("PK\x03\x04"))
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signed, _ := WriteBundle(BundleSpec{Name: "x", Platform: "esp32", Version: "1", BuildID: "b", App: []byte{1}, FS: []byte{2}, SignKeys: []*ecdsa.PrivateKey{k}})
	f.Add(signed)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(&recSink{})
		for len(b) > 0 {
			n := min(len(b), 13)
			if _, err := r.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
	})
}

func FuzzVerifyImage(f *testing.F) {
	f.Add([]byte{0xE9, 1, 2, 0x20, 0, 0, 0, 0, 0xEE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xE8})
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := VerifyImage(bytes.NewReader(b), int64(len(b)))
		if err == nil && info.Size > len(b) {
			t.Fatalf("image of %d bytes in %d", info.Size, len(b))
		}
	})
}

func TestAppImageVerifies(t *testing.T) {
	img := AppImage("app", "2.1", time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), bytes.Repeat([]byte{7}, 1000))
	info, err := VerifyImage(bytes.NewReader(img), int64(len(img)))
	if err != nil || info.Size != len(img) || info.Desc == nil || info.Desc.Version != "2.1" || info.Desc.Project != "app" || info.Desc.Date != "Nov 25 2026" {
		t.Fatalf("%+v %v", info, err)
	}
	// Any change to segment data, segment lengths, the magic or the
	// checksum is caught (load addresses and flash settings are not summed).
	var check []int
	for i := 32; i < 32+256; i++ {
		check = append(check, i)
	}
	check = append(check, 0, 1, 28, 32+256+4, 32+256+8, len(img)-1)
	for _, i := range check {
		bad := append([]byte(nil), img...)
		bad[i] ^= 0x40
		if _, err := VerifyImage(bytes.NewReader(bad), int64(len(bad))); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
}

func TestWriteBundleReads(t *testing.T) {
	app := AppImage("x", "1", time.Now(), nil)
	z, err := WriteBundle(BundleSpec{Name: "x", Platform: "esp32", Version: "1", BuildID: "b", App: app, FS: []byte("fs")})
	if err != nil {
		t.Fatal(err)
	}
	s := &recSink{}
	if _, err := NewReader(s).Write(z); err != nil || fmt.Sprint(s.events) != "[manifest 1 begin fs.img 2 end fs.img begin x.bin "+fmt.Sprint(len(app))+" end x.bin]" {
		t.Fatalf("%v %v", s.events, err)
	}
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	if fmt.Sprint(names) != "[x-1/manifest.json x-1/fs.img x-1/x.bin]" {
		t.Errorf("entries %v, want the mgos_fw_meta.py layout", names)
	}
}

// TestReaderManifestPosition: the updater drops the folder (up to the
// first '/') and needs manifest.json as the first entry; otherwise it
// logs "Get NAME instead of manifest.json" and sets no status message.
func TestReaderManifestPosition(t *testing.T) {
	zipOf := func(names ...string) []byte {
		var files []testkit.ZipFile
		for _, n := range names {
			d := []byte("data")
			if strings.HasSuffix(n, "manifest.json") {
				d = []byte(testManifest)
			}
			files = append(files, testkit.ZipFile{Name: n, Data: d})
		}
		return testkit.StoredZip(t, files...)
	}
	for _, tc := range []struct {
		names []string
		log   string // "" = accepted
	}{
		{[]string{"manifest.json", "app.bin"}, ""},
		{[]string{"x-2.0/manifest.json", "x-2.0/app.bin"}, ""},
		{[]string{"x-esp32-2.0/manifest.json", "x-esp32-2.0/app.bin"}, ""},
		{[]string{"x-2.0/app.bin", "x-2.0/manifest.json"}, "Get app.bin instead of manifest.json"},
		{[]string{"app.bin", "manifest.json"}, "Get app.bin instead of manifest.json"},
		{[]string{"a/b/manifest.json", "a/b/app.bin"}, "Get b/manifest.json instead of manifest.json"},
	} {
		s := &recSink{}
		_, err := NewReader(s).Write(zipOf(tc.names...))
		var be *BundleError
		switch {
		case tc.log == "" && (err != nil || len(s.events) == 0 || s.events[0] != "manifest 2.0"):
			t.Errorf("%v: %v %v", tc.names, s.events, err)
		case tc.log != "" && (!errors.As(err, &be) || be.Log != tc.log || be.Status != "" || len(s.events) != 0):
			t.Errorf("%v: err %#v, events %v; want log %q and no status", tc.names, err, s.events, tc.log)
		}
	}
}

func TestSignatures(t *testing.T) {
	k0, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub := func(k *ecdsa.PrivateKey) string {
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		return base64.StdEncoding.EncodeToString(der)
	}
	app := AppImage("x", "1", time.Now(), nil)
	z, err := WriteBundle(BundleSpec{Name: "x", Platform: "esp32", Version: "1", BuildID: "b", App: app, FS: []byte("fs"), SignKeys: []*ecdsa.PrivateKey{k0, nil, k1}})
	if err != nil {
		t.Fatal(err)
	}
	var m *Manifest
	r := NewReader(&manifestSink{f: func(got *Manifest) { m = got }})
	r.Write(z)
	if m == nil || len(m.Sigs) != 2 {
		t.Fatalf("manifest sigs: %+v", m)
	}
	keys := [KeySlots]string{pub(k0), pub(k0), pub(k1), "not base64!"}
	if res := CheckSignatures(m, keys); res != 0b101 {
		t.Errorf("result %03b, want 101", res)
	}
	tampered := *m
	tampered.Raw = append(append([]byte(nil), m.Raw...), ' ')
	if res := CheckSignatures(&tampered, keys); res != 0 {
		t.Errorf("tampered manifest: %03b", res)
	}
	for _, tc := range []struct {
		res  uint8
		mask int
		ok   bool
	}{{0, -1, true}, {0, 0, false}, {7, 0, false}, {1, 1, true}, {4, 1, false}, {5, 5, true}, {1, 5, false}} {
		if SignatureAccepted(tc.res, tc.mask) != tc.ok {
			t.Errorf("SignatureAccepted(%b, %d) != %v", tc.res, tc.mask, tc.ok)
		}
	}
}

type manifestSink struct{ f func(*Manifest) }

func (s *manifestSink) Manifest(m *Manifest) error       { s.f(m); return nil }
func (s *manifestSink) FileBegin(FileInfo) (bool, error) { return false, nil }
func (s *manifestSink) FileData(FileInfo, []byte) error  { return nil }
func (s *manifestSink) FileEnd(FileInfo) error           { return nil }
