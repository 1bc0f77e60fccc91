package emu

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/mosemu/mosemu/rpc"
)

// readZip returns a zip's entries in order and their contents.
func readZip(t *testing.T, z []byte) ([]*zip.File, map[string][]byte) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	data := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data[f.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	return zr.File, data
}

// TestFirmwareZip8266Layout compares the zip with the one mgos_fw_meta.py
// (what mos build runs) wrote from the same parts (testdata/fwzip8266):
// the same entries in the same order (manifest.json first, in the folder
// <name>-<version>/), stored, and the same manifest.json bytes; the
// digests and sizes of the files (which change with the images) are
// checked against the zip's own files instead.
func TestFirmwareZip8266Layout(t *testing.T) {
	ref, err := os.ReadFile(filepath.Join("testdata", "fwzip8266", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var refM struct {
		BuildTimestamp time.Time `json:"build_timestamp"`
	}
	json.Unmarshal(ref, &refM)
	z, err := FirmwareZip8266(Bundle8266{Version: "2.5", BuildID: "20261125-150000/2.5@mosemu", Built: refM.BuildTimestamp})
	if err != nil {
		t.Fatal(err)
	}
	entries, data := readZip(t, z)
	listing, _ := os.ReadFile(filepath.Join("testdata", "fwzip8266", "entries.txt"))
	var want, got []string
	for _, l := range strings.Split(string(listing), "\n") {
		if f := strings.Fields(l); len(f) == 4 && !strings.HasPrefix(l, "#") {
			want = append(want, strings.Join(f[:3], " "))
		}
	}
	for _, f := range entries {
		got = append(got, fmt.Sprintf("%s %d %d", f.Name, f.Method, f.Flags))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entries\n%v\nwant (mgos_fw_meta.py)\n%v", got, want)
	}
	// Local headers carry the sizes and CRC-32, as the updater needs.
	if h := z[:30]; !bytes.Equal(h[:4], []byte("PK\x03\x04")) || h[6]&8 != 0 ||
		crc32.ChecksumIEEE(data["mosemu-2.5/manifest.json"]) != uint32(h[14])|uint32(h[15])<<8|uint32(h[16])<<16|uint32(h[17])<<24 {
		t.Errorf("first local header % x", h)
	}

	manifest := data["mosemu-2.5/manifest.json"]
	var m struct {
		Parts map[string]struct {
			Src    string `json:"src"`
			Size   int    `json:"size"`
			SHA1   string `json:"cs_sha1"`
			SHA256 string `json:"cs_sha256"`
		} `json:"parts"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	for name, p := range m.Parts {
		if p.Src == "" {
			continue
		}
		f := data["mosemu-2.5/"+p.Src]
		s1, s256 := sha1.Sum(f), sha256.Sum256(f)
		if f == nil || p.Size != len(f) || p.SHA1 != hex.EncodeToString(s1[:]) || p.SHA256 != hex.EncodeToString(s256[:]) {
			t.Errorf("part %s: size %d sha1 %s sha256 %s do not describe %s (%d bytes)", name, p.Size, p.SHA1, p.SHA256, p.Src, len(f))
		}
	}
	mask := func(b []byte) string {
		s := regexp.MustCompile(`"cs_sha(1|256)": "[0-9a-f]+"`).ReplaceAllString(string(b), `"cs_sha$1": "-"`)
		return regexp.MustCompile(`"size": \d+(,\s+"src")`).ReplaceAllString(s, `"size": -$1`)
	}
	if mask(manifest) != mask(ref) {
		t.Errorf("manifest.json\n%s\nwant (mgos_fw_meta.py)\n%s", manifest, ref)
	}
}

// manifestLast rewrites a firmware zip with manifest.json as its last
// entry, as fw-bundle-esp8266 used to write it: boot, fw and fs first.
func manifestLast(t *testing.T, z []byte) []byte {
	t.Helper()
	entries, data := readZip(t, z)
	dir := entries[0].Name[:strings.IndexByte(entries[0].Name, '/')+1]
	var files []testkit.ZipFile
	for _, name := range []string{"rboot.bin", AppName + ".bin", "fs.bin", "manifest.json"} {
		files = append(files, testkit.ZipFile{Name: dir + name, Data: data[dir+name]})
	}
	return testkit.StoredZip(t, files...)
}

// TestOTAESP8266ManifestLast: the updater reads the zip as it streams in
// and needs manifest.json first. With it last the first OTA.Write fails,
// the device logs "Get rboot.bin instead of manifest.json" (no status
// message, as ota-common), keeps running its firmware with rBoot's config
// untouched and takes the same files with the manifest first.
func TestOTAESP8266ManifestLast(t *testing.T) {
	con := &testkit.SyncBuffer{}
	d := startDevice8266(t, t.TempDir(), con)
	url := "ws://" + d.HTTPAddr() + "/rpc"
	c := dial(t, url)
	before := rbootConfig(t, d)
	good, err := FirmwareZip8266(Bundle8266{Version: "2.5", BuildID: "20261125-150000/2.5@test"})
	if err != nil {
		t.Fatal(err)
	}
	// As mos ota: OTA.Begin, OTA.Write (the first chunk fails), OTA.End.
	bad := manifestLast(t, good)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	call(t, c, "OTA.Begin", map[string]any{"timeout": 600, "commit_timeout": 300, "size": len(bad)})
	_, err = c.Call(ctx, "OTA.Write", map[string]any{"offset": 0, "data": base64.StdEncoding.EncodeToString(bad[:512])})
	if e := (*rpc.Error)(nil); !errors.As(err, &e) || e.Code != -1 {
		t.Fatalf("OTA.Write of a zip with the manifest last: %v", err)
	}
	if !strings.Contains(con.String(), "Get rboot.bin instead of manifest.json") {
		t.Errorf("console lacks the updater's error:\n%s", con.String())
	}
	var st struct {
		State int     `json:"state"`
		Msg   *string `json:"msg"`
	}
	json.Unmarshal(call(t, c, "OTA.Status", nil), &st)
	if st.State != 2 || st.Msg == nil || *st.Msg != "" {
		t.Errorf("OTA.Status after the failed write: state %d msg %v, want state 2 (error), no message", st.State, st.Msg)
	}
	if _, err := c.Call(ctx, "OTA.End", nil); err == nil {
		t.Error("OTA.End of the failed update succeeded")
	}
	json.Unmarshal(call(t, c, "OTA.Status", nil), &st)
	if st.State != 0 {
		t.Errorf("OTA.Status after OTA.End: state %d", st.State)
	}
	if after := rbootConfig(t, d); after != before {
		t.Errorf("rBoot config changed: %+v -> %+v", before, after)
	}
	waitFW(t, url, FWVersion)

	if err := mosOTA(c, good, 512, 300); err != nil {
		t.Fatal(err)
	}
	if si := waitFW(t, url, "2.5"); si.FWID != "20261125-150000/2.5@test" {
		t.Errorf("fw_id = %q", si.FWID)
	}
}
