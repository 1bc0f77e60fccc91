// Package atomicfile replaces files so that a crash leaves either the old
// or the new content: temp file in the same directory, fsync, rename,
// fsync of the directory.
package atomicfile

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Write replaces path with data.
func Write(path string, data []byte) error {
	if err := replace(path, data, true); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// WriteDeferred replaces path with data atomically (temp file and rename)
// without waiting for the disk: a crash of the process leaves the old or
// the new content, a crash of the host may leave neither until the caller
// has made the filesystem durable with SyncFS. For writing many files at
// once (a fleet creating thousands of devices) with one flush at the end.
func WriteDeferred(path string, data []byte) error { return replace(path, data, false) }

// replace writes data to a temporary file beside path (synced to disk
// first when sync is set) and renames it over path.
func replace(path string, data []byte, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// SyncFS flushes the whole filesystem holding path to stable storage: one
// call makes every WriteDeferred before it durable.
func SyncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
