package fs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"syscall"
	"time"

	"github.com/spf13/afero"
)

var _ afero.Fs = (*FS)(nil)

func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: op, Path: name, Err: err}
}

// Name implements afero.Fs.
func (f *FS) Name() string { return "littlefs" }

// Create implements afero.Fs.
func (f *FS) Create(name string) (afero.File, error) {
	return f.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

// Open implements afero.Fs.
func (f *FS) Open(name string) (afero.File, error) { return f.OpenFile(name, os.O_RDONLY, 0) }

// OpenFile implements afero.Fs.
func (f *FS) OpenFile(name string, flag int, _ os.FileMode) (afero.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.mounted {
		return nil, pathErr("open", name, os.ErrClosed)
	}
	m, id, err := f.lookup(name)
	switch {
	case err == nil && m == nil: // root
		if flag&(os.O_WRONLY|os.O_RDWR) != 0 {
			return nil, pathErr("open", name, syscall.EISDIR)
		}
		return &File{fs: f, name: "/", dir: f.rootDir()}, nil
	case err == nil:
		e := m.entries[id]
		if flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0 {
			return nil, pathErr("open", name, os.ErrExist)
		}
		if e.typ == typeDir {
			if flag&(os.O_WRONLY|os.O_RDWR) != 0 {
				return nil, pathErr("open", name, syscall.EISDIR)
			}
			d := f.dirAt(e.child)
			if d == nil {
				return nil, pathErr("open", name, fmt.Errorf("%w: directory points to a missing pair", ErrCorrupt))
			}
			return &File{fs: f, name: clean(name), dir: d}, nil
		}
	case errors.Is(err, os.ErrNotExist) && flag&os.O_CREATE != 0:
		if err := f.writable(); err != nil {
			return nil, pathErr("open", name, err)
		}
		d, base, perr := f.parentDir(name)
		if perr != nil {
			return nil, pathErr("open", name, perr)
		}
		if err := f.insert(d, &entry{name: base, typ: typeReg}); err != nil {
			return nil, pathErr("open", name, err)
		}
	default:
		return nil, pathErr("open", name, err)
	}
	fl := &File{fs: f, name: clean(name), flag: flag}
	if err := fl.load(); err != nil {
		return nil, pathErr("open", name, err)
	}
	if flag&os.O_TRUNC != 0 && flag&(os.O_WRONLY|os.O_RDWR) != 0 && len(fl.data) > 0 {
		fl.data, fl.dirty, fl.dirtyFrom = fl.data[:0], true, 0
	}
	return fl, nil
}

// Mkdir implements afero.Fs.
func (f *FS) Mkdir(name string, _ os.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, _, err := f.lookup(name); err == nil {
		return pathErr("mkdir", name, os.ErrExist)
	}
	if err := f.writable(); err != nil {
		return pathErr("mkdir", name, err)
	}
	d, base, err := f.parentDir(name)
	if err != nil {
		return pathErr("mkdir", name, err)
	}
	return pathErr("mkdir", name, f.mkdir(d, base))
}

// MkdirAll implements afero.Fs.
func (f *FS) MkdirAll(p string, perm os.FileMode) error {
	p = clean(p)
	if p == "" {
		return nil
	}
	if st, err := f.Stat(p); err == nil {
		if st.IsDir() {
			return nil
		}
		return pathErr("mkdir", p, syscall.ENOTDIR)
	}
	if err := f.MkdirAll(path.Dir(p), perm); err != nil {
		return err
	}
	return f.Mkdir(p, perm)
}

// Remove implements afero.Fs.
func (f *FS) Remove(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, _, err := f.lookup(name)
	if err == nil && m == nil {
		err = os.ErrPermission
	}
	if err != nil {
		return pathErr("remove", name, err)
	}
	if err := f.writable(); err != nil {
		return pathErr("remove", name, err)
	}
	// writable may have repaired the image (a pending move, an orphan):
	// look the entry up again.
	m, id, err := f.lookup(name)
	if err != nil {
		return pathErr("remove", name, err)
	}
	return pathErr("remove", name, f.remove(m, id))
}

// RemoveAll implements afero.Fs.
func (f *FS) RemoveAll(p string) error {
	st, err := f.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.IsDir() {
		d, err := f.Open(p)
		if err != nil {
			return err
		}
		names, _ := d.Readdirnames(-1)
		d.Close()
		for _, n := range names {
			if err := f.RemoveAll(path.Join(p, n)); err != nil {
				return err
			}
		}
		if clean(p) == "" {
			return nil
		}
	}
	return f.Remove(p)
}

// Rename implements afero.Fs, as lfs_rename: within one metadata pair a
// single commit; across pairs the move is recorded in the global state so
// that a power cut never leaves the entry in both places or in neither.
func (f *FS) Rename(oldname, newname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.writable(); err != nil {
		return pathErr("rename", oldname, err)
	}
	return pathErr("rename", oldname, f.rename(oldname, newname))
}

// Stat implements afero.Fs.
func (f *FS) Stat(name string) (os.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, id, err := f.lookup(name)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	if m == nil {
		return fileInfo{name: "/", dir: true}, nil
	}
	e := m.entries[id]
	return fileInfo{name: e.name, size: e.fileSize(), dir: e.typ == typeDir}, nil
}

// Chmod is accepted and ignored: littlefs stores no modes.
func (f *FS) Chmod(string, os.FileMode) error { return nil }

// Chown is accepted and ignored: littlefs stores no owners.
func (f *FS) Chown(string, int, int) error { return nil }

// Chtimes is accepted and ignored: littlefs stores no times.
func (f *FS) Chtimes(string, time.Time, time.Time) error { return nil }

type fileInfo struct {
	name string
	size int64
	dir  bool
}

func (i fileInfo) Name() string { return i.name }
func (i fileInfo) Size() int64  { return i.size }
func (i fileInfo) Mode() os.FileMode {
	if i.dir {
		return os.ModeDir | 0o755
	}
	return 0o644
}
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return i.dir }
func (i fileInfo) Sys() any           { return nil }

// File is an open file or directory. File contents are buffered while open
// and committed on Sync and Close, as littlefs does.
type File struct {
	fs        *FS
	name      string
	flag      int
	dir       *dirNode
	dirPos    int
	data      []byte
	pos       int64
	dirty     bool
	dirtyFrom int
	closed    bool
}

func (fl *File) load() error {
	m, id, err := fl.fs.lookup(fl.name)
	if err != nil {
		return err
	}
	data, _, err := fl.fs.readAll(m.entries[id])
	fl.data, fl.dirtyFrom = data, len(data)
	return err
}

// Name implements afero.File.
func (fl *File) Name() string { return "/" + fl.name }

func (fl *File) writable() bool { return fl.flag&(os.O_WRONLY|os.O_RDWR) != 0 }

// Read implements io.Reader.
func (fl *File) Read(p []byte) (int, error) {
	n, err := fl.ReadAt(p, fl.pos)
	fl.pos += int64(n)
	return n, err
}

// ReadAt implements io.ReaderAt.
func (fl *File) ReadAt(p []byte, off int64) (int, error) {
	if fl.dir != nil {
		return 0, syscall.EISDIR
	}
	if fl.closed {
		return 0, os.ErrClosed
	}
	if fl.flag&os.O_WRONLY != 0 {
		return 0, os.ErrPermission
	}
	if off < 0 {
		return 0, os.ErrInvalid
	}
	if off >= int64(len(fl.data)) {
		return 0, io.EOF
	}
	n := copy(p, fl.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Seek implements io.Seeker. As littlefs, it refuses positions beyond
// LFS_FILE_MAX with EINVAL.
func (fl *File) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += fl.pos
	case io.SeekEnd:
		off += int64(len(fl.data))
	}
	if off < 0 || off > fileMax {
		return fl.pos, os.ErrInvalid
	}
	fl.pos = off
	return off, nil
}

// Write implements io.Writer.
func (fl *File) Write(p []byte) (int, error) {
	if fl.flag&os.O_APPEND != 0 {
		fl.pos = int64(len(fl.data))
	}
	n, err := fl.WriteAt(p, fl.pos)
	fl.pos += int64(n)
	return n, err
}

// WriteAt implements io.WriterAt.
func (fl *File) WriteAt(p []byte, off int64) (int, error) {
	if fl.closed {
		return 0, os.ErrClosed
	}
	if !fl.writable() || fl.dir != nil {
		return 0, os.ErrPermission
	}
	if off < 0 {
		return 0, os.ErrInvalid
	}
	// Compare without computing off+len(p), which overflows for offsets
	// near the int64 limit.
	if limit := int64(fl.fs.blockCount) * BlockSize; off > limit || int64(len(p)) > limit-off {
		return 0, ErrNoSpace
	}
	end := off + int64(len(p))
	if end > int64(len(fl.data)) {
		fl.data = append(fl.data, make([]byte, end-int64(len(fl.data)))...)
	}
	copy(fl.data[off:], p)
	fl.dirty = true
	fl.dirtyFrom = min(fl.dirtyFrom, int(off))
	return len(p), nil
}

// WriteString implements afero.File.
func (fl *File) WriteString(s string) (int, error) { return fl.Write([]byte(s)) }

// Truncate implements afero.File.
func (fl *File) Truncate(size int64) error {
	if !fl.writable() {
		return os.ErrPermission
	}
	if size < 0 {
		return os.ErrInvalid
	}
	if size > int64(fl.fs.blockCount)*BlockSize {
		return ErrNoSpace
	}
	if size < int64(len(fl.data)) {
		fl.data = fl.data[:size]
		fl.dirtyFrom = min(fl.dirtyFrom, int(size))
	} else {
		fl.data = append(fl.data, make([]byte, size-int64(len(fl.data)))...)
	}
	fl.dirty = true
	return nil
}

// Sync commits the file's contents to flash.
func (fl *File) Sync() error {
	if !fl.dirty || fl.closed {
		return nil
	}
	f := fl.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.writable(); err != nil {
		return err
	}
	m, id, err := f.lookup(fl.name)
	if err != nil {
		return err
	}
	if err := f.storeFile(m, id, fl.data, fl.dirtyFrom); err != nil {
		return err
	}
	fl.dirty, fl.dirtyFrom = false, len(fl.data)
	return nil
}

// Close commits and closes the file.
func (fl *File) Close() error {
	if fl.closed {
		return os.ErrClosed
	}
	err := fl.Sync()
	fl.closed = true
	fl.data = nil
	return err
}

// Stat implements afero.File.
func (fl *File) Stat() (os.FileInfo, error) {
	if fl.dir != nil {
		return fileInfo{name: path.Base("/" + fl.name), dir: true}, nil
	}
	return fileInfo{name: path.Base(fl.name), size: int64(len(fl.data))}, nil
}

// Readdir implements afero.File: entries in on-disk order.
func (fl *File) Readdir(count int) ([]os.FileInfo, error) {
	if fl.dir == nil {
		return nil, syscall.ENOTDIR
	}
	fl.fs.mu.Lock()
	var all []os.FileInfo
	for _, m := range fl.dir.pairs {
		for _, e := range m.entries {
			if e.typ == typeReg || e.typ == typeDir {
				all = append(all, fileInfo{name: e.name, size: e.fileSize(), dir: e.typ == typeDir})
			}
		}
	}
	fl.fs.mu.Unlock()
	if fl.dirPos >= len(all) {
		if count > 0 {
			return nil, io.EOF
		}
		return nil, nil
	}
	all = all[fl.dirPos:]
	if count > 0 && count < len(all) {
		all = all[:count]
	}
	fl.dirPos += len(all)
	return all, nil
}

// Readdirnames implements afero.File.
func (fl *File) Readdirnames(n int) ([]string, error) {
	infos, err := fl.Readdir(n)
	names := make([]string, len(infos))
	for i, fi := range infos {
		names[i] = fi.Name()
	}
	return names, err
}
