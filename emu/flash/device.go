// Package flash models the SPI NOR flash chip of an emulated board: erase sets
// bytes to 0xFF in whole sectors, programming can only clear bits.
package flash

import "errors"

// SectorSize is the erase granularity of the emulated SPI flash chips.
const SectorSize = 4096

// Erased is the value of every byte of an erased sector.
const Erased = 0xFF

// Errors reported by flash devices.
var (
	ErrOutOfRange = errors.New("flash: address out of range")
	ErrUnaligned  = errors.New("flash: erase not sector aligned")
)

// Device is the byte-level view of a flash chip (or a window or transformed
// view of one) as seen by its user.
//
// ReadAt reads len(p) bytes at off. WriteAt programs len(p) bytes at off:
// each stored byte becomes old&new, as on NOR flash, so writing over data that
// was not erased corrupts it exactly as the hardware would. Erase sets
// [off, off+n) to 0xFF; both must be multiples of SectorSize.
type Device interface {
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Erase(off, n int64) error
}
