// Package efuse models the ESP32 efuse controller: four blocks of
// one-time-programmable bits (BLK0 configuration, BLK1 flash encryption
// key, BLK2 secure boot key, BLK3 user), burns that can only set bits,
// write and read protection, the controller registers tools drive, and
// persistence in espressif QEMU's 124-byte efuse file.
package efuse

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sync"

	"github.com/mosemu/mosemu/internal/atomicfile"
)

// Words per block: BLK0 has 7, the key blocks 8.
var blockWords = [4]int{7, 8, 8, 8}

// Register offsets (from either base address).
const (
	BaseAPB = 0x3FF5A000 // DR_REG_EFUSE_BASE
	BaseAHB = 0x6001A000 // alias used by mos

	regClk       = 0x0F8
	regConf      = 0x0FC
	regStatus    = 0x100
	regCmd       = 0x104
	regIntRaw    = 0x108
	regIntClr    = 0x114
	regDacConf   = 0x118
	regDecStatus = 0x11C
	regDate      = 0x1FC

	opPgm  = 0x5A5A
	opRead = 0x5AA5
)

var rdataOff = [4]uint32{0x000, 0x038, 0x058, 0x078}
var wdataOff = [4]uint32{0x01C, 0x098, 0x0B8, 0x0D8}

// Field is a named group of bits in BLK0 (or a whole key block).
type Field struct {
	Name     string // espefuse name
	MosName  string // name used by mos esp32-efuse-get/set
	Block    int
	Word     int
	Shift    uint
	Width    uint // bits; 256 for key blocks
	WrDisBit int  // -1: not write-protectable
	RdDisBit int  // -1: not read-protectable
}

// Fields lists the fields in the order `mos esp32-efuse-get` prints them.
var Fields = []Field{
	{"WR_DIS", "efuse_wr_disable", 0, 0, 0, 16, 1, -1},
	{"RD_DIS", "efuse_rd_disable", 0, 0, 16, 4, 0, -1},
	{"FLASH_CRYPT_CNT", "flash_crypt_cnt", 0, 0, 20, 8, 2, -1},
	{"MAC", "WIFI_MAC_Address", 0, 1, 0, 56, 3, -1},
	{"DISABLE_APP_CPU", "disable_app_cpu", 0, 3, 0, 1, 3, -1},
	{"DISABLE_BT", "disable_bt", 0, 3, 1, 1, 3, -1},
	{"CHIP_PACKAGE_4BIT", "chip_pkg3", 0, 3, 2, 1, -1, -1},
	{"DIS_CACHE", "disable_cache", 0, 3, 3, 1, 3, -1},
	{"SPI_PAD_CONFIG_HD", "SPI_pad_config_hd", 0, 3, 4, 5, 3, -1},
	{"CHIP_PACKAGE", "chip_pkg02", 0, 3, 9, 3, -1, -1},
	{"CHIP_CPU_FREQ_LOW", "cpu_freq_low", 0, 3, 12, 1, -1, -1},
	{"CHIP_CPU_FREQ_RATED", "cpu_freq_rated", 0, 3, 13, 1, -1, -1},
	{"BLK3_PART_RESERVE", "blk3_part_reserve", 0, 3, 14, 1, 10, 3},
	{"CHIP_VER_REV1", "chip_rev1", 0, 3, 15, 1, -1, -1},
	{"XPD_SDIO_REG", "XPD_SDIO_REG", 0, 4, 14, 1, 5, -1},
	{"XPD_SDIO_TIEH", "SDIO_TIEH", 0, 4, 15, 1, 5, -1},
	{"XPD_SDIO_FORCE", "sdio_force", 0, 4, 16, 1, 5, -1},
	{"SPI_PAD_CONFIG_CLK", "SPI_pad_config_clk", 0, 5, 0, 5, 6, -1},
	{"SPI_PAD_CONFIG_Q", "SPI_pad_config_q", 0, 5, 5, 5, 6, -1},
	{"SPI_PAD_CONFIG_D", "SPI_pad_config_d", 0, 5, 10, 5, 6, -1},
	{"SPI_PAD_CONFIG_CS0", "SPI_pad_config_cs0", 0, 5, 15, 5, 6, -1},
	{"CHIP_VER_REV2", "chip_rev2", 0, 5, 20, 1, -1, -1},
	{"FLASH_CRYPT_CONFIG", "flash_crypt_config", 0, 5, 28, 4, 10, 3},
	{"CODING_SCHEME", "coding_scheme", 0, 6, 0, 2, 10, 3},
	{"CONSOLE_DEBUG_DISABLE", "console_debug_disable", 0, 6, 2, 1, 15, -1},
	{"ABS_DONE_0", "abstract_done_0", 0, 6, 4, 1, 12, -1},
	{"ABS_DONE_1", "abstract_done_1", 0, 6, 5, 1, 13, -1},
	{"JTAG_DISABLE", "JTAG_disable", 0, 6, 6, 1, 14, -1},
	{"DISABLE_DL_ENCRYPT", "download_dis_encrypt", 0, 6, 7, 1, 15, -1},
	{"DISABLE_DL_DECRYPT", "download_dis_decrypt", 0, 6, 8, 1, 15, -1},
	{"DISABLE_DL_CACHE", "download_dis_cache", 0, 6, 9, 1, 15, -1},
	{"KEY_STATUS", "key_status", 0, 6, 10, 1, 10, 3},
	{"BLOCK1", "flash_encryption_key", 1, 0, 0, 256, 7, 0},
	{"BLOCK2", "secure_boot_key", 2, 0, 0, 256, 8, 1},
	{"BLOCK3", "user_key", 3, 0, 0, 256, 9, 2},
}

// FieldByName finds a field by its espefuse or mos name.
func FieldByName(name string) (Field, bool) {
	for _, f := range Fields {
		if f.Name == name || f.MosName == name {
			return f, true
		}
	}
	return Field{}, false
}

// Errors of burn operations.
var (
	ErrWriteProtected = errors.New("efuse: field is write-protected")
	ErrTooWide        = errors.New("efuse: value wider than the field")
)

// Efuses is one chip's efuses and controller. Safe for concurrent use.
type Efuses struct {
	mu      sync.Mutex
	stored  [4][8]uint32 // the fuse array
	visible [4][8]uint32 // RDATA registers: stored as of the last reload, RD_DIS applied
	wdata   [4][8]uint32
	conf    uint32
	clk     uint32
	dacConf uint32

	// OnBurn, when set, is called after a burn (with the efuses locked: it
	// must not call back into them), e.g. to show the burn in a lab console.
	OnBurn func()
}

// Factory returns a fresh ESP32-D0WDQ6 revision 1 with a MAC derived from
// seed (OUI 24:0A:C4), as it leaves the factory.
func Factory(seed uint64) *Efuses {
	e := &Efuses{conf: 0x10000, clk: 0x4052, dacConf: 0x28}
	var mac [6]byte
	copy(mac[:], []byte{0x24, 0x0A, 0xC4})
	mac[3], mac[4], mac[5] = byte(seed>>16), byte(seed>>8), byte(seed)
	e.stored[0][1] = binary.BigEndian.Uint32(mac[2:6])
	e.stored[0][2] = uint32(mac[0])<<8 | uint32(mac[1]) | uint32(CRC8(mac[:]))<<16
	// A real ESP32-D0WDQ6 revision 1: CHIP_VER_REV1, CHIP_CPU_FREQ_RATED
	// with CHIP_CPU_FREQ_LOW clear (240 MHz), package 0; ADC_VREF trimmed
	// (0x02: +14 mV), CK8M_FREQ calibration 0x60.
	e.stored[0][3] = 1<<15 | 1<<13
	e.stored[0][4] = 0x02<<8 | 0x60
	e.reload()
	return e
}

// CRC8 is the MAC checksum (Dallas/Maxim CRC-8, reflected 0x8C, init 0).
func CRC8(p []byte) uint8 {
	var c uint8
	for _, b := range p {
		c ^= b
		for i := 0; i < 8; i++ {
			if c&1 != 0 {
				c = c>>1 ^ 0x8C
			} else {
				c >>= 1
			}
		}
	}
	return c
}

func (e *Efuses) field(f Field, words *[4][8]uint32) uint64 {
	if f.Width == 56 { // MAC: w1 then w2[23:0]
		return uint64(words[0][1])<<24 | uint64(words[0][2]&0xFFFFFF)
	}
	return uint64(words[f.Block][f.Word]>>f.Shift) & (1<<f.Width - 1)
}

func (e *Efuses) rdDis() uint32 { return e.stored[0][0] >> 16 & 0xF }
func (e *Efuses) wrDis() uint32 { return e.stored[0][0] & 0xFFFF }

// reload copies the fuse array into the read registers, hiding what RD_DIS
// protects, as the controller's read command does.
func (e *Efuses) reload() {
	e.visible = e.stored
	rd := e.rdDis()
	for b := 1; b <= 3; b++ {
		if rd&(1<<(b-1)) != 0 {
			e.visible[b] = [8]uint32{}
		}
	}
	if rd&(1<<3) != 0 {
		for _, f := range Fields {
			if f.Block == 0 && f.RdDisBit == 3 {
				e.visible[0][f.Word] &^= uint32(1<<f.Width-1) << f.Shift
			}
		}
	}
}

// burn ORs w into the fuse array, ignoring bits whose field is
// write-protected (WR_DIS as it was before the burn).
func (e *Efuses) burn(w [4][8]uint32) {
	wr := e.wrDis()
	for b := 0; b < 4; b++ {
		if b > 0 && wr&(1<<(6+b)) != 0 { // BLK1..3: WR_DIS bits 7..9
			continue
		}
		for i := 0; i < blockWords[b]; i++ {
			bitsToSet := w[b][i]
			if b == 0 {
				for _, f := range Fields {
					if f.Block == 0 && f.WrDisBit >= 0 && wr&(1<<f.WrDisBit) != 0 {
						bitsToSet &^= fieldMask(f, i)
					}
				}
			}
			e.stored[b][i] |= bitsToSet
		}
	}
	if e.OnBurn != nil {
		e.OnBurn()
	}
}

// fieldMask is the bits of word i that belong to f.
func fieldMask(f Field, i int) uint32 {
	if f.Width == 56 {
		switch i {
		case 1:
			return 0xFFFFFFFF
		case 2:
			return 0xFFFFFF
		}
		return 0
	}
	if f.Word != i {
		return 0
	}
	return uint32(1<<f.Width-1) << f.Shift
}

// ReadReg reads a controller register; ok is false outside the efuse block.
func (e *Efuses) ReadReg(addr uint32) (uint32, bool) {
	off, ok := offset(addr)
	if !ok {
		return 0, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for b := 0; b < 4; b++ {
		if off >= rdataOff[b] && off < rdataOff[b]+4*uint32(blockWords[b]) {
			return e.visible[b][(off-rdataOff[b])/4], true
		}
		if off >= wdataOff[b] && off < wdataOff[b]+4*uint32(blockWords[b]) {
			return e.wdata[b][(off-wdataOff[b])/4], true
		}
	}
	switch off {
	case regClk:
		return e.clk, true
	case regConf:
		return e.conf, true
	case regDacConf:
		return e.dacConf, true
	case regDate:
		return 0x16042600, true
	}
	return 0, true // STATUS, CMD (always idle), INT, DEC_STATUS
}

// WriteReg writes a controller register; ok is false outside the block.
func (e *Efuses) WriteReg(addr, v uint32) bool {
	_, ok := e.WriteRegBurn(addr, v)
	return ok
}

// WriteRegBurn is WriteReg that also reports whether the write was a
// program command that changed the fuse array: the only register write
// whose effect must be made durable.
func (e *Efuses) WriteRegBurn(addr, v uint32) (burnt, ok bool) {
	off, ok := offset(addr)
	if !ok {
		return false, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for b := 0; b < 4; b++ {
		if off >= wdataOff[b] && off < wdataOff[b]+4*uint32(blockWords[b]) {
			e.wdata[b][(off-wdataOff[b])/4] = v
			return false, true
		}
	}
	switch off {
	case regClk:
		e.clk = v
	case regConf:
		e.conf = v
	case regDacConf:
		e.dacConf = v
	case regCmd:
		switch {
		case v&2 != 0 && e.conf&0xFFFF == opPgm:
			before := e.stored
			e.burn(e.wdata)
			e.wdata = [4][8]uint32{}
			burnt = e.stored != before
		case v&1 != 0 && e.conf&0xFFFF == opRead:
			e.reload()
		}
	}
	return burnt, true
}

func offset(addr uint32) (uint32, bool) {
	for _, base := range []uint32{BaseAPB, BaseAHB} {
		if addr >= base && addr < base+0x200 {
			return addr - base, true
		}
	}
	return 0, false
}

// MAC returns the factory MAC.
func (e *Efuses) MAC() [6]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	w1, w2 := e.stored[0][1], e.stored[0][2]
	return [6]byte{byte(w2 >> 8), byte(w2), byte(w1 >> 24), byte(w1 >> 16), byte(w1 >> 8), byte(w1)}
}

// Value returns a BLK0 field as the hardware holds it (ignoring RD_DIS).
func (e *Efuses) Value(name string) (uint64, error) {
	f, ok := FieldByName(name)
	if !ok || f.Block != 0 {
		return 0, fmt.Errorf("efuse: unknown field %q", name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.field(f, &e.stored), nil
}

// FlashCryptCnt returns FLASH_CRYPT_CNT (7 bits).
func (e *Efuses) FlashCryptCnt() uint8 {
	v, _ := e.Value("FLASH_CRYPT_CNT")
	return uint8(v & 0x7F)
}

// EncryptionEnabled reports whether FLASH_CRYPT_CNT has an odd number of bits.
func (e *Efuses) EncryptionEnabled() bool { return bits.OnesCount8(e.FlashCryptCnt())%2 == 1 }

// FlashCryptConfig returns FLASH_CRYPT_CONFIG.
func (e *Efuses) FlashCryptConfig() uint8 {
	v, _ := e.Value("FLASH_CRYPT_CONFIG")
	return uint8(v)
}

// FlashEncryptionKey returns the BLK1 key in key-file byte order, as the
// encryption engine sees it (read protection does not apply to it). With
// the 3/4 coding scheme the 192-bit key is extended as espsecure does.
func (e *Efuses) FlashEncryptionKey() [32]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return blockKey(e.stored[1], e.stored[0][6]&3 == 1)
}

func blockKey(w [8]uint32, scheme34 bool) [32]byte {
	var le [32]byte
	for i := 0; i < 8; i++ {
		binary.LittleEndian.PutUint32(le[4*i:], w[i])
	}
	var k [32]byte
	for i := range k {
		k[i] = le[31-i]
	}
	if scheme34 { // 24 key bytes, then key[8:16] again
		var k24 [32]byte
		copy(k24[:24], k[8:])
		copy(k24[24:], k[16:24])
		return k24
	}
	return k
}

// keyWords encodes a key-file-order key into block words (espefuse/mos).
func keyWords(k [32]byte) [8]uint32 {
	var w [8]uint32
	for i := 0; i < 8; i++ {
		w[i] = binary.BigEndian.Uint32(k[28-4*i:])
	}
	return w
}

// Burn sets the bits of value in a BLK0 field (bits already set stay set;
// clearing a bit is an error, as with mos esp32-efuse-set).
func (e *Efuses) Burn(name string, value uint64) error {
	f, ok := FieldByName(name)
	if !ok || f.Block != 0 || f.Width == 56 {
		return fmt.Errorf("efuse: cannot burn %q", name)
	}
	if value>>f.Width != 0 {
		return fmt.Errorf("%w: %s is %d bits", ErrTooWide, name, f.Width)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if f.WrDisBit >= 0 && e.wrDis()&(1<<f.WrDisBit) != 0 {
		return fmt.Errorf("%w: %s", ErrWriteProtected, name)
	}
	old := e.field(f, &e.stored)
	if old&^value != 0 {
		return fmt.Errorf("efuse: cannot reset %s bits from 1 to 0 (%#x -> %#x)", name, old, value)
	}
	var w [4][8]uint32
	w[0][f.Word] = uint32(value) << f.Shift
	e.burn(w)
	e.reload()
	return nil
}

// BurnKey burns a 32-byte key (file order) into BLK1..BLK3.
func (e *Efuses) BurnKey(block int, key [32]byte) error {
	if block < 1 || block > 3 {
		return fmt.Errorf("efuse: block %d holds no key", block)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.wrDis()&(1<<(6+block)) != 0 {
		return fmt.Errorf("%w: BLOCK%d", ErrWriteProtected, block)
	}
	var w [4][8]uint32
	w[block] = keyWords(key)
	e.burn(w)
	e.reload()
	return nil
}

// Protect burns WR_DIS and/or RD_DIS bits.
func (e *Efuses) Protect(wrDis, rdDis uint32) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if wrDis&^0xFFFF != 0 || rdDis&^0xF != 0 {
		return ErrTooWide
	}
	var w [4][8]uint32
	w[0][0] = wrDis | rdDis<<16
	e.burn(w)
	e.reload()
	return nil
}

// GenerateKeyIfUnset burns a random flash encryption key into BLK1 unless
// one is there, as the bootloader does on its first encrypting boot.
func (e *Efuses) GenerateKeyIfUnset() error {
	e.mu.Lock()
	empty := e.stored[1] == [8]uint32{}
	e.mu.Unlock()
	if !empty {
		return nil
	}
	var k [32]byte
	rand.Read(k[:])
	return e.BurnKey(1, k)
}

// EnableFlashEncryption burns the next FLASH_CRYPT_CNT bit (making the
// count odd) and read/write-protects the key, as the bootloader does.
func (e *Efuses) EnableFlashEncryption() error {
	cnt := e.FlashCryptCnt()
	if bits.OnesCount8(cnt)%2 == 1 {
		return nil
	}
	next := cnt | (cnt+1)&^cnt // lowest clear bit
	if next > 0x7F {
		return errors.New("efuse: FLASH_CRYPT_CNT exhausted")
	}
	if err := e.Burn("FLASH_CRYPT_CNT", uint64(next)); err != nil {
		return err
	}
	return e.Protect(1<<7, 1<<0)
}

// FileSize is the size of espressif QEMU's efuse file.
const FileSize = 124

// MarshalBinary renders the QEMU efuse file: 31 little-endian words,
// BLK0 w0..w6, then BLK1, BLK2, BLK3.
func (e *Efuses) MarshalBinary() ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]byte, 0, FileSize)
	for b := 0; b < 4; b++ {
		for i := 0; i < blockWords[b]; i++ {
			out = binary.LittleEndian.AppendUint32(out, e.stored[b][i])
		}
	}
	return out, nil
}

// Parse reads a QEMU efuse file.
func Parse(b []byte) (*Efuses, error) {
	if len(b) != FileSize {
		return nil, fmt.Errorf("efuse: file is %d bytes, want %d", len(b), FileSize)
	}
	e := &Efuses{conf: 0x10000, clk: 0x4052, dacConf: 0x28}
	for b0, off := 0, 0; b0 < 4; b0++ {
		for i := 0; i < blockWords[b0]; i++ {
			e.stored[b0][i] = binary.LittleEndian.Uint32(b[off:])
			off += 4
		}
	}
	e.reload()
	return e, nil
}

// Load reads path, or returns the factory efuses for seed when it does not
// exist.
func Load(path string, seed uint64) (*Efuses, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Factory(seed), nil
	}
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

// Save writes the efuse file atomically (temp file, fsync, rename).
func (e *Efuses) Save(path string) error {
	b, _ := e.MarshalBinary()
	return atomicfile.Write(path, b)
}
