package emu

import (
	"sync"

	"github.com/mosemu/mosemu/configs"
)

// FactoryImages shares the factory image (what `mos flash` of the stock
// build leaves on a chip: boot loader, partition table, application, the
// fs image) between the devices of a process, such as a fleet: it is built
// once per board and schema instead of once per new device. The zero value
// is ready to use; the images it holds are never modified.
type FactoryImages struct {
	mu sync.Mutex
	m  map[factoryKey][]factoryWrite
}

// factoryKey is what a factory image depends on.
type factoryKey struct {
	arch      string
	flashSize int64
	schema    *configs.Schema // conf0.json holds its defaults
}

// factoryWrite is data written at a flash offset.
type factoryWrite struct {
	off  int64
	data []byte
}

// get returns the image for k, built by build the first time.
func (f *FactoryImages) get(k factoryKey, build func() ([]factoryWrite, error)) ([]factoryWrite, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if img, ok := f.m[k]; ok {
		return img, nil
	}
	img, err := build()
	if err != nil {
		return nil, err
	}
	if f.m == nil {
		f.m = map[factoryKey][]factoryWrite{}
	}
	f.m[k] = img
	return img, nil
}
