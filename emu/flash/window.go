package flash

import "fmt"

// Window is the view of [Off, Off+Len) of a Device as a Device of its own,
// such as one partition.
type Window struct {
	Dev Device
	Off int64
	Len int64
}

// NewWindow returns the view of [off, off+n) of dev.
func NewWindow(dev Device, off, n int64) *Window { return &Window{Dev: dev, Off: off, Len: n} }

// Size returns the window length.
func (w *Window) Size() int64 { return w.Len }

func (w *Window) check(off, n int64) error {
	if off < 0 || n < 0 || off+n > w.Len {
		return fmt.Errorf("%w: [%#x, %#x) beyond window of %#x bytes", ErrOutOfRange, off, off+n, w.Len)
	}
	return nil
}

// ReadAt reads at off within the window.
func (w *Window) ReadAt(p []byte, off int64) (int, error) {
	if err := w.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	return w.Dev.ReadAt(p, w.Off+off)
}

// WriteAt programs at off within the window.
func (w *Window) WriteAt(p []byte, off int64) (int, error) {
	if err := w.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	return w.Dev.WriteAt(p, w.Off+off)
}

// Erase erases at off within the window.
func (w *Window) Erase(off, n int64) error {
	if err := w.check(off, n); err != nil {
		return err
	}
	return w.Dev.Erase(w.Off+off, n)
}
