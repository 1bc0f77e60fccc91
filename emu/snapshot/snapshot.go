// Package snapshot saves and restores a device's whole state directory
// (flash, efuses, ATECC608A, identity) under a name, so that every seat of
// a workshop starts an exercise from the same point.
//
// Snapshots live in DIR/snapshots/NAME. Saving writes a new copy beside the
// old one and swaps it in with a rename. Restoring is journaled: the files
// are staged in DIR/.restore, a commit marker is written, then each file is
// renamed into place; Recover (run by every operation, and by `mosemu run`)
// finishes a committed restore interrupted by a crash and discards an
// uncommitted one, so a kill -9 at any instant leaves either the old state
// or the snapshot, never a mix.
package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is the subdirectory of a state directory holding its snapshots.
const Dir = "snapshots"

const (
	restoreDir = ".restore"
	commitFile = "COMMIT"
	metaFile   = "snapshot.json"
	// busyFile is held with a shared flock by the process running the
	// device (see Hold); an exclusive non-blocking flock on it tells
	// whether a device runs. The flash image is never replaced while the
	// device runs, so the lock stays on the file the device uses.
	busyFile = "flash.bin"
)

// ErrRunning is returned when the device of the state directory is running
// in another process (or by another owner in this one).
var ErrRunning = errors.New("the device is running: stop it first, or use the lab console's snapshot/restore buttons")

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName reports whether name is usable as a snapshot name.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("bad snapshot name %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// Info describes a saved snapshot.
type Info struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Files   []string  `json:"files"`
	Bytes   int64     `json:"bytes"` // on disk (sparse files count their data only)
}

// Store is the snapshots of one state directory.
type Store struct {
	// StateDir is the device's state directory.
	StateDir string
	// Owner is true for the process running the device, which stops it
	// around a restore; others are refused while it runs.
	Owner bool
}

// stateFiles lists the state files: the regular files at the top of the
// state directory, except hidden ones and lock files.
func stateFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".lock") || strings.HasSuffix(n, ".tmp") {
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

// deviceLock is the advisory lock file a running device may hold in its
// state directory (an exclusive flock for as long as it runs).
const deviceLock = ".lock"

// Running reports whether a process holds the device of dir: its state
// directory lock (.lock) or, through Hold, its flash image.
func Running(dir string) (bool, error) {
	for _, name := range []string{deviceLock, busyFile} {
		busy, err := flocked(filepath.Join(dir, name))
		if busy || err != nil {
			return busy, err
		}
	}
	return false, nil
}

// Holder names the process holding the device of dir, from the pid its
// state directory lock records ("process 123"), or "another process".
func Holder(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, deviceLock))
	if pid := strings.TrimSpace(string(b)); err == nil && pid != "" {
		if _, err := strconv.Atoi(pid); err == nil {
			return "process " + pid
		}
	}
	return "another process"
}

// flocked reports whether another open file holds an flock on path.
func flocked(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false, nil
}

// Hold marks the device of dir as running until release is called: other
// processes' Save and Restore refuse with ErrRunning. Call it after the
// device has created its flash image.
func Hold(dir string) (release func(), err error) {
	f, err := os.Open(filepath.Join(dir, busyFile))
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", dir, ErrRunning)
	}
	return func() { f.Close() }, nil
}

func (s Store) checkIdle() error {
	if s.Owner {
		return nil
	}
	busy, err := Running(s.StateDir)
	if err != nil {
		return err
	}
	if busy {
		return fmt.Errorf("%s: %w", s.StateDir, ErrRunning)
	}
	return nil
}

// Save copies every state file into the snapshot name, replacing an
// existing snapshot of that name atomically. A running device may be saved
// by its owner: each file is copied as it is at that instant, as after a
// power cut.
func (s Store) Save(name string) (Info, error) {
	if err := CheckName(name); err != nil {
		return Info{}, err
	}
	if err := s.checkIdle(); err != nil { // first: never touch a running device's restore
		return Info{}, err
	}
	if err := s.Recover(); err != nil {
		return Info{}, err
	}
	files, err := stateFiles(s.StateDir)
	if err != nil {
		return Info{}, err
	}
	if len(files) == 0 {
		return Info{}, fmt.Errorf("%s holds no device state", s.StateDir)
	}
	root := filepath.Join(s.StateDir, Dir)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return Info{}, err
	}
	tmp, err := os.MkdirTemp(root, ".new-"+name+"-")
	if err != nil {
		return Info{}, err
	}
	defer os.RemoveAll(tmp)
	info := Info{Name: name, Created: time.Now().UTC().Truncate(time.Second), Files: files}
	for _, f := range files {
		n, err := copyFile(filepath.Join(s.StateDir, f), filepath.Join(tmp, f))
		if err != nil {
			return Info{}, err
		}
		info.Bytes += n
	}
	meta, _ := json.MarshalIndent(info, "", "  ")
	if err := writeSync(filepath.Join(tmp, metaFile), append(meta, '\n')); err != nil {
		return Info{}, err
	}
	if err := syncDir(tmp); err != nil {
		return Info{}, err
	}
	final := filepath.Join(root, name)
	old := ""
	if _, err := os.Stat(final); err == nil {
		old = filepath.Join(root, fmt.Sprintf(".old-%s-%d", name, time.Now().UnixNano()))
		if err := os.Rename(final, old); err != nil {
			return Info{}, err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if old != "" {
			os.Rename(old, final)
		}
		return Info{}, err
	}
	if old != "" {
		os.RemoveAll(old)
	}
	return info, syncDir(root)
}

// Load returns the description of a saved snapshot.
func (s Store) Load(name string) (Info, error) {
	if err := CheckName(name); err != nil {
		return Info{}, err
	}
	b, err := os.ReadFile(filepath.Join(s.StateDir, Dir, name, metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return Info{}, fmt.Errorf("no snapshot %q in %s", name, s.StateDir)
	}
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return Info{}, fmt.Errorf("snapshot %q: %s: %w", name, metaFile, err)
	}
	for _, f := range info.Files {
		if f != filepath.Base(f) || strings.HasPrefix(f, ".") {
			return Info{}, fmt.Errorf("snapshot %q: bad file name %q", name, f)
		}
	}
	return info, nil
}

// List returns the saved snapshots, oldest first. It only reads, so it is
// safe while a restore is under way.
func (s Store) List() ([]Info, error) {
	ents, err := os.ReadDir(filepath.Join(s.StateDir, Dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if info, err := s.Load(e.Name()); err == nil {
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// Restore replaces the state files with the snapshot's; state files the
// snapshot does not have are removed. The device must not be running
// unless the caller owns it and has stopped it.
func (s Store) Restore(name string) error {
	if err := s.checkIdle(); err != nil {
		return err
	}
	if err := s.Recover(); err != nil {
		return err
	}
	info, err := s.Load(name)
	if err != nil {
		return err
	}
	stage := filepath.Join(s.StateDir, restoreDir)
	if err := os.RemoveAll(stage); err != nil {
		return err
	}
	if err := os.Mkdir(stage, 0o755); err != nil {
		return err
	}
	src := filepath.Join(s.StateDir, Dir, name)
	for _, f := range info.Files {
		if _, err := copyFile(filepath.Join(src, f), filepath.Join(stage, f)); err != nil {
			os.RemoveAll(stage)
			return fmt.Errorf("snapshot %q: %w", name, err)
		}
	}
	current, err := stateFiles(s.StateDir)
	if err != nil {
		return err
	}
	journal := struct {
		Snapshot string   `json:"snapshot"`
		Files    []string `json:"files"`
		Remove   []string `json:"remove"`
	}{Snapshot: name, Files: info.Files}
	keep := map[string]bool{}
	for _, f := range info.Files {
		keep[f] = true
	}
	for _, f := range current {
		if !keep[f] {
			journal.Remove = append(journal.Remove, f)
		}
	}
	if err := syncDir(stage); err != nil {
		return err
	}
	b, _ := json.Marshal(journal)
	// The commit point: from here on, Recover finishes the restore.
	if err := writeSync(filepath.Join(stage, commitFile+".tmp"), b); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(stage, commitFile+".tmp"), filepath.Join(stage, commitFile)); err != nil {
		return err
	}
	if err := syncDir(stage); err != nil {
		return err
	}
	return s.Recover()
}

// Recover completes a restore that was committed but interrupted, and
// discards one that was not committed. Only the owner of the device (or
// anyone while it does not run) may call it.
func (s Store) Recover() error {
	stage := filepath.Join(s.StateDir, restoreDir)
	b, err := os.ReadFile(filepath.Join(stage, commitFile))
	if errors.Is(err, os.ErrNotExist) {
		if err := os.RemoveAll(stage); err != nil {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	var journal struct {
		Files  []string `json:"files"`
		Remove []string `json:"remove"`
	}
	if err := json.Unmarshal(b, &journal); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(stage, commitFile), err)
	}
	for _, f := range journal.Files {
		err := os.Rename(filepath.Join(stage, filepath.Base(f)), filepath.Join(s.StateDir, filepath.Base(f)))
		if err != nil && !errors.Is(err, os.ErrNotExist) { // already moved by an earlier attempt
			return err
		}
	}
	for _, f := range journal.Remove {
		if err := os.Remove(filepath.Join(s.StateDir, filepath.Base(f))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := syncDir(s.StateDir); err != nil {
		return err
	}
	return os.RemoveAll(stage)
}

// copyFile copies src to dst (created, fsynced), keeping runs of zero
// 4 KiB blocks as holes: an erased flash sector stays free on disk. It
// returns the bytes of data written.
func copyFile(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return 0, err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return 0, err
	}
	var written int64
	buf := make([]byte, 4096)
	zero := make([]byte, 4096)
	var off int64
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 {
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, werr := out.WriteAt(buf[:n], off); werr != nil {
					out.Close()
					return 0, werr
				}
				written += int64(n)
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			out.Close()
			return 0, err
		}
	}
	if err := out.Truncate(off); err != nil {
		out.Close()
		return 0, err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return 0, err
	}
	return written, out.Close()
}

func writeSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// CopyState copies the state files of src into dst (created), e.g. to
// boot a throwaway copy of a device that may be running.
func CopyState(src, dst string) error {
	files, err := stateFiles(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if _, err := copyFile(filepath.Join(src, f), filepath.Join(dst, f)); err != nil {
			return err
		}
	}
	return nil
}
