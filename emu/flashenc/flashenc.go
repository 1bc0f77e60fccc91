// Package flashenc is the ESP32 flash encryption engine: AES-256 with a key
// tweaked per 32-byte block by the flash address, run "inverted" (a flash
// write is an AES decrypt), on byte-reversed 16-byte blocks; the algorithm
// of espsecure and the ESP32 hardware.
package flashenc

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"
)

// tweakPattern is, for each key bit n (MSB first), the flash address bit
// that flips it: 16 descending runs ending at bit 5.
var tweakPattern = func() [256]uint8 {
	var p [256]uint8
	n := 0
	run := func(hi int) {
		for b := hi; b >= 5; b-- {
			p[n] = uint8(b)
			n++
		}
	}
	for _, tail := range []int{14, 12, 10, 8} {
		run(23)
		run(23)
		run(23)
		run(tail)
	}
	return p
}()

// rangeEnd[i] is the first key bit after the range enabled by bit i of
// FLASH_CRYPT_CONFIG.
var rangeStart = [4]int{0, 67, 132, 195}
var rangeEnd = [4]int{67, 132, 195, 256}

// TweakKey returns the AES key used for the 32-byte block holding addr.
func TweakKey(key [32]byte, config uint8, addr uint32) [32]byte {
	k := key
	for r := 0; r < 4; r++ {
		if config&(1<<r) == 0 {
			continue
		}
		for n := rangeStart[r]; n < rangeEnd[r]; n++ {
			if addr&(1<<tweakPattern[n]) != 0 {
				k[n/8] ^= 0x80 >> (n % 8)
			}
		}
	}
	return k
}

// Cipher encrypts and decrypts flash contents for one key and config.
type Cipher struct {
	key    [32]byte
	config uint8

	// masks[b-5] is the key bits that flash address bit b flips: the tweak
	// is linear, so a block's key is key ^ the masks of its address bits.
	masks [19][32]byte

	mu    sync.Mutex
	cache map[uint32]cipher.Block // by address bits 5..23
}

// NewCipher returns the engine for key (the 32-byte key file, in file
// order) and FLASH_CRYPT_CONFIG (0..0xF).
func NewCipher(key [32]byte, config uint8) (*Cipher, error) {
	if config > 0xF {
		return nil, fmt.Errorf("flashenc: FLASH_CRYPT_CONFIG %#x out of range", config)
	}
	c := &Cipher{key: key, config: config, cache: map[uint32]cipher.Block{}}
	var zero [32]byte
	for b := 5; b <= 23; b++ {
		c.masks[b-5] = TweakKey(zero, config, 1<<b)
	}
	return c, nil
}

func (c *Cipher) block(addr uint32) cipher.Block {
	idx := addr & 0x00FFFFE0
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.cache[idx]; ok {
		return b
	}
	b := c.newBlock(idx)
	if len(c.cache) >= 4096 {
		clear(c.cache)
	}
	c.cache[idx] = b
	return b
}

// newBlock builds the AES cipher of the 32-byte block at idx.
func (c *Cipher) newBlock(idx uint32) cipher.Block {
	k := c.key
	for bit := 5; bit <= 23; bit++ {
		if idx&(1<<bit) != 0 {
			for i := range k {
				k[i] ^= c.masks[bit-5][i]
			}
		}
	}
	b, _ := aes.NewCipher(k[:])
	return b
}

// ErrAlignment is returned for data or addresses not 16-byte aligned.
var ErrAlignment = errors.New("flashenc: address and length must be multiples of 16")

// Encrypt turns plaintext destined for flash address addr into the bytes
// the hardware stores (AES decrypt direction).
func (c *Cipher) Encrypt(dst, src []byte, addr uint32) error {
	return c.run(dst, src, addr, false)
}

// Decrypt turns flash contents at addr into what the CPU reads through
// the cache (AES encrypt direction).
func (c *Cipher) Decrypt(dst, src []byte, addr uint32) error {
	return c.run(dst, src, addr, true)
}

func (c *Cipher) run(dst, src []byte, addr uint32, encryptDir bool) error {
	if addr%16 != 0 || len(src)%16 != 0 || len(dst) < len(src) {
		return ErrAlignment
	}
	var in, out [16]byte
	long := len(src) > 4096 // streaming: the cache would only churn
	var b cipher.Block
	for off := 0; off < len(src); off += 16 {
		if a := addr + uint32(off); a%32 == 0 || off == 0 {
			if long {
				b = c.newBlock(a & 0x00FFFFE0)
			} else {
				b = c.block(a)
			}
		}
		for i := 0; i < 16; i++ {
			in[i] = src[off+15-i]
		}
		if encryptDir {
			b.Encrypt(out[:], in[:])
		} else {
			b.Decrypt(out[:], in[:])
		}
		for i := 0; i < 16; i++ {
			dst[off+i] = out[15-i]
		}
	}
	return nil
}
