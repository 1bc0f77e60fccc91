// Package i2c is the device's virtual I2C bus: targets attach at 7-bit
// addresses; a transaction to an address nobody answers is NACKed.
package i2c

import (
	"errors"
	"fmt"
	"sync"
)

// ErrNACK is returned when no target acknowledges its address, or a target
// NACKs (an ATECC608A that is asleep, for one).
var ErrNACK = errors.New("i2c: NACK")

// Target is a device on the bus.
type Target interface {
	// I2CWrite receives the bytes of one write transaction.
	I2CWrite(p []byte) error
	// I2CRead fills p in one read transaction and returns the bytes sent.
	I2CRead(p []byte) (int, error)
}

// Bus is one I2C bus. Transactions are serialised, as on the wire.
type Bus struct {
	mu      sync.Mutex
	targets map[byte]Target
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{targets: make(map[byte]Target)} }

// Attach puts t on the bus at the 7-bit address addr.
func (b *Bus) Attach(addr byte, t Target) error {
	if addr > 0x7F {
		return fmt.Errorf("i2c: address %#x is not 7-bit", addr)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.targets[addr]; ok {
		return fmt.Errorf("i2c: address %#x already in use", addr)
	}
	b.targets[addr] = t
	return nil
}

// Waker is a target that reacts to the wake pulse: SDA held low, which a
// host produces by writing to the general-call address 0x00.
type Waker interface{ Wake() }

// Write performs a write transaction to addr. A write to address 0x00
// wakes every Waker on the bus and is not acknowledged.
func (b *Bus) Write(addr byte, p []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if addr == 0x00 {
		for _, t := range b.targets {
			if w, ok := t.(Waker); ok {
				w.Wake()
			}
		}
		return ErrNACK
	}
	t, ok := b.targets[addr]
	if !ok {
		return fmt.Errorf("%w: no device at %#x", ErrNACK, addr)
	}
	return t.I2CWrite(p)
}

// Read performs a read transaction from addr.
func (b *Bus) Read(addr byte, p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.targets[addr]
	if !ok {
		return 0, fmt.Errorf("%w: no device at %#x", ErrNACK, addr)
	}
	return t.I2CRead(p)
}
