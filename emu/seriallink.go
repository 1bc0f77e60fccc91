package emu

import (
	"fmt"
	"os"
	"path/filepath"
)

// SerialLinkFile is the symlink in a device's state directory that points
// to its current serial pty (the pty number changes at every start).
const SerialLinkFile = "serial"

// linkSerial points path at the pty, replacing what was there (a link left
// by a previous run): a symlink made under a temporary name and renamed, so
// the path never dangles half-way.
func linkSerial(path, pty string) error {
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("serial link %s exists and is not a symlink: not replacing it", path)
	}
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d", filepath.Base(path), os.Getpid()))
	os.Remove(tmp)
	if err := os.Symlink(pty, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// unlinkSerial removes the link at path if it still points to pty (another
// run may have taken it over since).
func unlinkSerial(path, pty string) {
	if target, err := os.Readlink(path); err == nil && target == pty {
		os.Remove(path)
	}
}

// SerialLink returns the stable path of the serial port (STATE/serial or
// Options.SerialLink), or "" without a serial port.
func (d *Device) SerialLink() string {
	if d.port == nil {
		return ""
	}
	return d.serialLink
}
