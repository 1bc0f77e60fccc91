// Package ota is the Mongoose OS firmware updater of an emulated ESP32: the
// streaming reader of firmware bundles (a stored .zip with manifest.json
// first), the backend that writes the app and filesystem images to the
// inactive slot, the ESP-IDF otadata boot selection, the update boot state
// (old slot, new slot, first boot, merge fs) and the OTA.* RPC service.
package ota

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
)

// ZIP record signatures the updater recognises.
const (
	zipLocalMagic = 0x04034b50
	zipCDirMagic  = 0x02014b50
	zipHeaderSize = 30
	maxNameLen    = 49 // struct mgos_ota_file_info.name is 50 bytes
	// MaxManifestSize bounds the manifest the updater buffers in RAM.
	MaxManifestSize = 16 << 10
	// ChunkSize is the size of the pieces file data is handed over in.
	ChunkSize = 512
)

// Manifest is what the updater reads from manifest.json.
type Manifest struct {
	Name     string          `json:"name"`
	Platform string          `json:"platform"`
	Version  string          `json:"version"`
	BuildID  string          `json:"build_id"`
	Parts    map[string]Part `json:"parts"`
	Raw      []byte          `json:"-"`
	// Sigs are the signatures mos create-fw-bundle --sign-key puts in the
	// manifest entry's zip extra field (sig0..sig7, base64 ASN.1 ECDSA over
	// the SHA-256 of manifest.json).
	Sigs map[string]string `json:"-"`
}

// Part is one entry of the manifest's "parts".
type Part struct {
	Type   string `json:"type,omitempty"`
	Src    string `json:"src,omitempty"`
	Ptn    string `json:"ptn,omitempty"`
	SHA1   string `json:"cs_sha1,omitempty"`
	Addr   uint32 `json:"addr,omitempty"`
	Update bool   `json:"update,omitempty"`
}

// FileInfo describes a file of the bundle as it starts.
type FileInfo struct {
	Name string // base name (the directory part is dropped)
	Size uint32
	CRC  uint32
}

// Sink receives the bundle's contents as they are parsed.
type Sink interface {
	// Manifest is called once manifest.json is complete and checked.
	Manifest(m *Manifest) error
	// FileBegin starts a file; returning false skips its data.
	FileBegin(fi FileInfo) (bool, error)
	// FileData delivers the next piece of the current file.
	FileData(fi FileInfo, data []byte) error
	// FileEnd finishes the current file (its CRC already checked).
	FileEnd(fi FileInfo) error
}

// ErrBundle marks a malformed or unacceptable bundle (errors.Is matches
// every *BundleError).
var ErrBundle = errors.New("bad firmware bundle")

// BundleError is a bundle the updater refuses. Status is the updater's
// status message, what OTA.Status and the failed call report (empty where
// the updater sets none); Log is the error line it logs, if any.
type BundleError struct{ Status, Log string }

func (e *BundleError) Error() string {
	if e.Status == "" {
		return ErrBundle.Error() + ": " + e.Log
	}
	return ErrBundle.Error() + ": " + e.Status
}

// Is makes errors.Is(err, ErrBundle) hold.
func (e *BundleError) Is(target error) bool { return target == ErrBundle }

func bundleErr(format string, a ...any) error {
	return &BundleError{Status: fmt.Sprintf(format, a...)}
}

// loggedErr is a refusal the updater also logs.
func loggedErr(status, log string) error { return &BundleError{Status: status, Log: log} }

type readerState int

const (
	wantManifestHeader readerState = iota
	wantManifest
	wantFileHeader
	inFile
	skipFile
	finished // the central directory was reached
)

// Reader parses a firmware bundle streamed in arbitrary pieces, as the
// updater does: only stored (uncompressed) entries with their sizes in the
// local header, manifest.json first, each file's CRC-32 checked.
type Reader struct {
	sink    Sink
	state   readerState
	buf     []byte
	cur     FileInfo
	left    uint32
	crc     uint32
	extra   []byte // extra field of the current entry's local header
	written int64
}

// NewReader returns a reader feeding sink.
func NewReader(sink Sink) *Reader { return &Reader{sink: sink} }

// Done reports whether the end of the archive (its central directory) has
// been reached.
func (r *Reader) Done() bool { return r.state == finished }

// Consumed returns the number of bytes fed so far.
func (r *Reader) Consumed() int64 { return r.written }

// Write feeds the next bytes of the bundle. After an error the reader must
// not be used again.
func (r *Reader) Write(p []byte) (int, error) {
	r.written += int64(len(p))
	r.buf = append(r.buf, p...)
	for {
		progressed, err := r.step()
		if err != nil {
			return len(p), err
		}
		if !progressed {
			return len(p), nil
		}
	}
}

func (r *Reader) step() (bool, error) {
	switch r.state {
	case wantManifestHeader, wantFileHeader:
		if r.state == wantFileHeader && len(r.buf) >= 4 && binary.LittleEndian.Uint32(r.buf) == zipCDirMagic {
			r.state, r.buf = finished, nil
			return false, nil
		}
		fi, n, err := parseLocalHeader(r.buf)
		if err != nil || n == 0 {
			return false, err
		}
		r.extra = append(r.extra[:0], r.buf[n-int(binary.LittleEndian.Uint16(r.buf[28:])):n]...)
		r.buf = r.buf[n:]
		r.cur, r.left, r.crc = fi, fi.Size, 0
		if r.state == wantManifestHeader {
			if fi.Name != "manifest.json" {
				// The updater logs this and sets no status message.
				return false, loggedErr("", fmt.Sprintf("Get %s instead of manifest.json", fi.Name))
			}
			if fi.Size > MaxManifestSize {
				return false, bundleErr("Manifest too big (%d bytes)", fi.Size)
			}
			r.state = wantManifest
			return true, nil
		}
		want, err := r.sink.FileBegin(fi)
		if err != nil {
			return false, err
		}
		r.state = skipFile
		if want {
			r.state = inFile
		}
		return true, nil
	case wantManifest:
		if uint32(len(r.buf)) < r.cur.Size {
			return false, nil
		}
		data := r.buf[:r.cur.Size]
		if r.cur.CRC != 0 && crc32.ChecksumIEEE(data) != r.cur.CRC {
			return false, bundleErr("Invalid CRC")
		}
		m, err := ParseManifest(data)
		if err != nil {
			return false, err
		}
		m.Sigs = parseSigExtra(r.extra)
		r.buf = r.buf[r.cur.Size:]
		if err := r.sink.Manifest(m); err != nil {
			return false, err
		}
		r.state = wantFileHeader
		return true, nil
	case inFile, skipFile:
		for r.left > 0 && len(r.buf) > 0 {
			n := min(uint32(len(r.buf)), r.left, ChunkSize)
			if r.state == inFile && n < ChunkSize && n < r.left {
				break // wait for a whole chunk, as the updater does
			}
			chunk := r.buf[:n]
			if r.state == inFile {
				r.crc = crc32.Update(r.crc, crc32.IEEETable, chunk)
				if err := r.sink.FileData(r.cur, chunk); err != nil {
					return false, err
				}
			}
			r.buf, r.left = r.buf[n:], r.left-n
		}
		if r.left > 0 {
			r.buf = append([]byte(nil), r.buf...) // keep only the unprocessed tail
			return false, nil
		}
		if r.state == inFile {
			if r.cur.CRC != 0 && r.crc != r.cur.CRC {
				return false, loggedErr("Invalid CRC", fmt.Sprintf("Invalid CRC, want 0x%x, got 0x%x", r.cur.CRC, r.crc))
			}
			if err := r.sink.FileEnd(r.cur); err != nil {
				return false, err
			}
		}
		r.state = wantFileHeader
		return true, nil
	}
	return false, nil
}

// parseLocalHeader decodes a ZIP local file header at the start of b. It
// returns n == 0 when more bytes are needed.
func parseLocalHeader(b []byte) (FileInfo, int, error) {
	if len(b) < 4 {
		return FileInfo{}, 0, nil
	}
	if binary.LittleEndian.Uint32(b) != zipLocalMagic {
		return FileInfo{}, 0, bundleErr("Malformed archive (invalid file header)")
	}
	if len(b) < zipHeaderSize {
		return FileInfo{}, 0, nil
	}
	flags := binary.LittleEndian.Uint16(b[6:])
	method := binary.LittleEndian.Uint16(b[8:])
	crc := binary.LittleEndian.Uint32(b[14:])
	csize := binary.LittleEndian.Uint32(b[18:])
	usize := binary.LittleEndian.Uint32(b[22:])
	nameLen := int(binary.LittleEndian.Uint16(b[26:]))
	extraLen := int(binary.LittleEndian.Uint16(b[28:]))
	if len(b) < zipHeaderSize+nameLen+extraLen {
		return FileInfo{}, 0, nil
	}
	if method != 0 {
		return FileInfo{}, 0, loggedErr("Cannot handle compressed .zip", "Cannot handle compressed .zip")
	}
	if flags&(1<<3) != 0 && csize == 0 {
		return FileInfo{}, 0, bundleErr("Malformed archive (sizes in a data descriptor)")
	}
	if csize != usize {
		return FileInfo{}, 0, loggedErr("Malformed archive", "Malformed archive")
	}
	name := string(b[zipHeaderSize : zipHeaderSize+nameLen])
	if i := strings.IndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if len(name) > maxNameLen {
		return FileInfo{}, 0, loggedErr("Too long file name", "Too long file name")
	}
	return FileInfo{Name: name, Size: usize, CRC: crc}, zipHeaderSize + nameLen + extraLen, nil
}

// sigExtraID is the zip extra field mos puts the signatures in.
const sigExtraID = 0x293a

// parseSigExtra returns the string attributes of the signature extra field.
func parseSigExtra(extra []byte) map[string]string {
	for len(extra) >= 4 {
		id := binary.LittleEndian.Uint16(extra)
		n := int(binary.LittleEndian.Uint16(extra[2:]))
		if n > len(extra)-4 {
			return nil
		}
		if id == sigExtraID {
			var attrs map[string]any
			if json.Unmarshal(extra[4:4+n], &attrs) != nil {
				return nil
			}
			sigs := map[string]string{}
			for k, v := range attrs {
				if s, ok := v.(string); ok {
					sigs[k] = s
				}
			}
			return sigs
		}
		extra = extra[4+n:]
	}
	return nil
}

// ParseManifest decodes manifest.json and checks the fields the updater
// requires.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, bundleErr("Failed to parse manifest")
	}
	if m.Platform == "" || m.Version == "" || m.BuildID == "" || len(m.Parts) == 0 {
		return nil, bundleErr("Required manifest field missing")
	}
	m.Raw = append([]byte(nil), data...)
	return &m, nil
}
