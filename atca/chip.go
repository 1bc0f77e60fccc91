// Package atca models the Microchip ATECC608A crypto chip at command-packet
// level, as it sits on the device's I2C bus: wake/idle/sleep, CRC-16
// framed commands and responses, the configuration, OTP and data zones
// with their lock rules, and the commands Mongoose OS uses to provision
// and use it (Info, Read, Write incl. encrypted writes, Lock, Random,
// Nonce, GenDig, GenKey incl. into TempKey, Sign, Verify, ECDH, PrivWrite
// incl. encrypted, UpdateExtra, Counter, SHA, AES, SelfTest, MAC,
// CheckMac) and the watchdog. DeriveKey, KDF (whose algorithms are not
// public) and SecureBoot answer with a parse error.
package atca

import (
	"bytes"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash"
	"math/big"
	"os"
	"sync"
	"time"

	"github.com/mosemu/mosemu/emu/i2c"
	"github.com/mosemu/mosemu/internal/atomicfile"
)

// Device status codes (byte 1 of a 4-byte status group).
const (
	StatusOK         = 0x00
	StatusMiscompare = 0x01
	StatusParse      = 0x03
	StatusExec       = 0x0F
	StatusWake       = 0x11
	StatusCRC        = 0xFF
)

// Opcodes.
const (
	OpRead        = 0x02
	OpWrite       = 0x12
	OpGenDig      = 0x15
	OpNonce       = 0x16
	OpLock        = 0x17
	OpRandom      = 0x1B
	OpUpdateExtra = 0x20
	OpInfo        = 0x30
	OpGenKey      = 0x40
	OpSign        = 0x41
	OpPrivWrite   = 0x46
	OpCounter     = 0x24
	OpECDH        = 0x43
	OpVerify      = 0x45
	OpSHA         = 0x47
	OpAES         = 0x51
	OpSelfTest    = 0x77
	OpMAC         = 0x08
	OpCheckMac    = 0x28
)

// Zones.
const (
	ZoneConfig = 0
	ZoneOTP    = 1
	ZoneData   = 2
)

// slotSize is the size in bytes of each data slot.
func slotSize(slot int) int {
	switch {
	case slot < 8:
		return 36
	case slot == 8:
		return 416
	}
	return 72
}

type state int

const (
	asleep state = iota
	idle
	awake
)

// Chip is one ATECC608A. Safe for concurrent use.
type Chip struct {
	mu     sync.Mutex
	Config [128]byte
	OTP    [64]byte
	Slots  [16][]byte

	st      state
	out     []byte // response group
	rd      int    // read pointer
	tempKey [32]byte
	tk      struct {
		valid, fixed, genDig bool
		keyID                int
	}
	msgDig [32]byte
	msgOK  bool
	// tempPriv is a private key generated into TempKey (GenKey 0xFFFF) for
	// ECDH; sha is the running SHA command context.
	tempPriv *ecdsa.PrivateKey
	sha      hash.Hash
	// Counters are the two monotonic counters (Counter command).
	Counters [2]uint32

	// Now is the chip's clock (nil: time.Now), for the watchdog.
	Now    func() time.Time
	wokeAt time.Time

	// OnChange, when set, is called (with the chip locked) after a command
	// changed the non-volatile state, so that it can be persisted.
	OnChange func()
}

// NewBlank returns a factory-blank ATECC608A (revision 0x6002) whose
// serial number derives from seed.
func NewBlank(seed uint64) *Chip {
	c := &Chip{}
	cfg := c.Config[:]
	copy(cfg[0:4], []byte{0x01, 0x23, byte(seed >> 8), byte(seed)})
	copy(cfg[4:8], []byte{0x00, 0x00, 0x60, 0x02})
	copy(cfg[8:13], []byte{byte(seed >> 32), byte(seed >> 24), byte(seed >> 16), byte(seed >> 40), 0xEE})
	cfg[13], cfg[14], cfg[16] = 0xC1, 0x55, 0xC0
	copy(cfg[20:52], []byte{0x83, 0x20, 0x87, 0x20, 0x8F, 0x20, 0xC4, 0x8F, 0x8F, 0x8F, 0x8F, 0x8F, 0x9F, 0x8F, 0xAF, 0x8F})
	copy(cfg[52:68], []byte{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0})
	cfg[86], cfg[87], cfg[88], cfg[89] = 0x55, 0x55, 0xFF, 0xFF
	copy(cfg[96:128], []byte{0x33, 0, 0x33, 0, 0x33, 0, 0x1C, 0, 0x1C, 0, 0x1C, 0, 0x1C, 0, 0x1C, 0,
		0x3C, 0, 0x3C, 0, 0x3C, 0, 0x3C, 0, 0x3C, 0, 0x3C, 0, 0x3C, 0, 0x1C, 0})
	for i := range c.Slots {
		c.Slots[i] = bytes.Repeat([]byte{0xFF}, slotSize(i))
	}
	for i := range c.OTP {
		c.OTP[i] = 0xFF
	}
	return c
}

// CRC16 is the chip's CRC: polynomial 0x8005, init 0, data LSB first.
func CRC16(p []byte) uint16 {
	var crc uint16
	for _, b := range p {
		for i := 0; i < 8; i++ {
			if (b>>i)&1 != byte(crc>>15) {
				crc = crc<<1 ^ 0x8005
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// group frames data as a response: count, data, CRC (LE).
func group(data []byte) []byte {
	g := append([]byte{byte(len(data) + 3)}, data...)
	crc := CRC16(g)
	return append(g, byte(crc), byte(crc>>8))
}

func (c *Chip) sn() [9]byte {
	var s [9]byte
	copy(s[:4], c.Config[0:4])
	copy(s[4:], c.Config[8:13])
	return s
}

func (c *Chip) configLocked() bool { return c.Config[87] != 0x55 }
func (c *Chip) dataLocked() bool   { return c.Config[86] != 0x55 }
func (c *Chip) slotConfig(s int) uint16 {
	return binary.LittleEndian.Uint16(c.Config[20+2*s:])
}
func (c *Chip) keyConfig(s int) uint16 {
	return binary.LittleEndian.Uint16(c.Config[96+2*s:])
}
func (c *Chip) eccPrivate(s int) bool {
	kc := c.keyConfig(s)
	return kc&1 == 1 && (kc>>2)&7 == 4
}

// Wake is the wake pulse (a bus write to address 0x00).
func (c *Chip) Wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st != awake {
		if c.st == asleep {
			c.tk.valid, c.msgOK = false, false
		}
		c.st = awake
		c.wokeAt = c.now()
		c.out, c.rd = group([]byte{StatusWake}), 0
	}
}

func (c *Chip) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// watchdog puts an awake chip to sleep once it has been awake longer than
// tWATCHDOG (1.3 s, or about 13 s with ChipMode's long watchdog bit).
func (c *Chip) watchdog() {
	limit := 1300 * time.Millisecond
	if c.Config[19]&4 != 0 {
		limit = 13 * time.Second
	}
	if c.st == awake && c.now().Sub(c.wokeAt) > limit {
		c.st = asleep
		c.tk.valid, c.msgOK, c.tempPriv = false, false, nil
	}
}

// I2CWrite receives a write transaction: word address then payload.
func (c *Chip) I2CWrite(p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchdog()
	if c.st != awake {
		return i2c.ErrNACK
	}
	if len(p) == 0 {
		return nil
	}
	switch p[0] {
	case 0x00:
		c.rd = 0
	case 0x01:
		c.st = asleep
		c.tk.valid, c.msgOK = false, false
	case 0x02:
		c.st = idle
	case 0x03:
		before := c.snapshot()
		c.out, c.rd = group(c.command(p[1:])), 0
		if c.OnChange != nil && !bytes.Equal(before, c.snapshot()) {
			c.OnChange()
		}
	default:
		return i2c.ErrNACK
	}
	return nil
}

// I2CRead returns the next bytes of the response group.
func (c *Chip) I2CRead(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchdog()
	if c.st != awake || c.out == nil {
		return 0, i2c.ErrNACK
	}
	n := 0
	for n < len(p) {
		if c.rd < len(c.out) {
			p[n] = c.out[c.rd]
		} else {
			p[n] = 0xFF
		}
		c.rd++
		n++
	}
	return n, nil
}

func status(s byte) []byte { return []byte{s} }

// command parses and executes one command packet, returning the response
// data (a 1-byte status or the result).
func (c *Chip) command(pkt []byte) []byte {
	if len(pkt) < 7 || int(pkt[0]) != len(pkt) {
		return status(StatusParse)
	}
	if crc := CRC16(pkt[:len(pkt)-2]); byte(crc) != pkt[len(pkt)-2] || byte(crc>>8) != pkt[len(pkt)-1] {
		return status(StatusCRC)
	}
	op, p1, p2 := pkt[1], pkt[2], binary.LittleEndian.Uint16(pkt[3:5])
	data := pkt[5 : len(pkt)-2]
	switch op {
	case OpInfo:
		return c.info(p1, p2)
	case OpRead:
		return c.read(p1, p2)
	case OpWrite:
		return c.write(p1, p2, data)
	case OpLock:
		return c.lock(p1, p2)
	case OpRandom:
		return c.random()
	case OpNonce:
		return c.nonce(p1, p2, data)
	case OpGenDig:
		return c.genDig(p1, p2, data)
	case OpGenKey:
		return c.genKey(p1, p2)
	case OpSign:
		return c.sign(p1, p2)
	case OpPrivWrite:
		return c.privWrite(p1, p2, data)
	case OpUpdateExtra:
		return c.updateExtra(p1, p2)
	case OpVerify:
		return c.verify(p1, p2, data)
	case OpECDH:
		return c.ecdh(p1, p2, data)
	case OpCounter:
		return c.counter(p1, p2)
	case OpSHA:
		return c.shaCmd(p1, p2, data)
	case OpAES:
		return c.aes(p1, p2, data)
	case OpSelfTest:
		return status(StatusOK) // every self test passes
	case OpMAC:
		return c.mac(p1, p2, data)
	case OpCheckMac:
		return c.checkMac(p1, p2, data)
	}
	return status(StatusParse) // DeriveKey, KDF, SecureBoot: not modelled
}

// macKey returns the key a MAC/CheckMac uses: TempKey (mode bit1) or the
// slot's first 32 bytes; ok is false when TempKey is needed but unusable.
func (c *Chip) macKey(mode byte, slot int) ([]byte, bool) {
	if mode&2 != 0 {
		if !c.tk.valid || (mode&4 != 0) != c.tk.fixed {
			return nil, false
		}
		return c.tempKey[:], true
	}
	return c.Slots[slot][:32], true
}

func (c *Chip) mac(mode byte, p2 uint16, data []byte) []byte {
	if p2 > 15 || (mode&1 == 0 && len(data) != 32) || (mode&1 != 0 && len(data) != 0) {
		return status(StatusParse)
	}
	if !c.dataLocked() {
		return status(StatusExec)
	}
	key, ok := c.macKey(mode, int(p2))
	chal := data
	if mode&1 != 0 {
		if !c.tk.valid || (mode&4 != 0) != c.tk.fixed {
			ok = false
		}
		chal = c.tempKey[:]
	}
	if !ok {
		return status(StatusExec)
	}
	otp := make([]byte, 11)
	switch {
	case mode&0x10 != 0:
		copy(otp, c.OTP[:11])
	case mode&0x20 != 0:
		copy(otp, c.OTP[:8])
	}
	sn := c.sn()
	sn47, sn23 := make([]byte, 4), make([]byte, 2)
	if mode&0x40 != 0 {
		copy(sn47, sn[4:8])
		copy(sn23, sn[2:4])
	}
	msg := append(append(append([]byte{}, key...), chal...), OpMAC, mode, byte(p2), byte(p2>>8))
	msg = append(append(append(msg, otp...), sn[8]), sn47...)
	msg = append(append(msg, sn[0], sn[1]), sn23...)
	d := sha256.Sum256(msg)
	c.tk.valid = false
	return d[:]
}

func (c *Chip) checkMac(mode byte, p2 uint16, data []byte) []byte {
	if p2 > 15 || len(data) != 77 || mode&1 != 0 { // the Copy modes are not modelled
		return status(StatusParse)
	}
	if !c.dataLocked() {
		return status(StatusExec)
	}
	key, ok := c.macKey(mode, int(p2))
	if !ok {
		return status(StatusExec)
	}
	chal, resp, other := data[:32], data[32:64], data[64:77]
	otp := make([]byte, 8)
	if mode&0x20 != 0 {
		copy(otp, c.OTP[:8])
	}
	sn := c.sn()
	msg := append(append(append([]byte{}, key...), chal...), other[0:4]...)
	msg = append(append(append(msg, otp...), other[4:7]...), sn[8])
	msg = append(append(append(msg, other[7:11]...), sn[0], sn[1]), other[11:13]...)
	d := sha256.Sum256(msg)
	c.tk.valid = false
	if !bytes.Equal(d[:], resp) {
		return status(StatusMiscompare)
	}
	return status(StatusOK)
}

// pubFromSlot reads a stored public key (4 pad ‖ X ‖ 4 pad ‖ Y).
func (c *Chip) pubFromSlot(slot int) (*ecdsa.PublicKey, bool) {
	if slotSize(slot) < 72 {
		return nil, false
	}
	s := c.Slots[slot]
	x, y := new(big.Int).SetBytes(s[4:36]), new(big.Int).SetBytes(s[40:72])
	if !elliptic.P256().IsOnCurve(x, y) {
		return nil, false
	}
	return &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}, true
}

func (c *Chip) verify(mode byte, p2 uint16, data []byte) []byte {
	var msg []byte
	if mode&0x20 != 0 {
		if !c.msgOK {
			return status(StatusExec)
		}
		msg = c.msgDig[:]
	} else {
		if !c.tk.valid {
			return status(StatusExec)
		}
		msg = c.tempKey[:]
	}
	var pub *ecdsa.PublicKey
	switch mode & 7 {
	case 2: // external public key
		if p2 != 4 || len(data) != 128 {
			return status(StatusParse)
		}
		x, y := new(big.Int).SetBytes(data[64:96]), new(big.Int).SetBytes(data[96:128])
		if !elliptic.P256().IsOnCurve(x, y) {
			return status(StatusMiscompare)
		}
		pub = &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
	case 0: // stored public key
		if p2 > 15 || len(data) != 64 || !c.dataLocked() {
			return status(StatusParse)
		}
		var ok bool
		if pub, ok = c.pubFromSlot(int(p2)); !ok {
			return status(StatusExec)
		}
	default:
		return status(StatusParse)
	}
	r, sv := new(big.Int).SetBytes(data[:32]), new(big.Int).SetBytes(data[32:64])
	if !ecdsa.Verify(pub, msg, r, sv) {
		return status(StatusMiscompare)
	}
	return status(StatusOK)
}

func (c *Chip) ecdh(mode byte, p2 uint16, data []byte) []byte {
	if len(data) != 64 {
		return status(StatusParse)
	}
	var k *ecdsa.PrivateKey
	if mode&1 != 0 { // TempKey source; param2 is ignored (Mongoose sends 0x0010)
		if c.tempPriv == nil {
			return status(StatusExec)
		}
		k, c.tempPriv = c.tempPriv, nil
	} else {
		slot := int(p2)
		if p2 > 15 || !c.dataLocked() || !c.eccPrivate(slot) || c.slotConfig(slot)&4 == 0 {
			return status(StatusExec)
		}
		var ok bool
		if k, ok = c.privateKey(slot); !ok {
			return status(StatusExec)
		}
	}
	x, y := new(big.Int).SetBytes(data[:32]), new(big.Int).SetBytes(data[32:])
	if !elliptic.P256().IsOnCurve(x, y) {
		return status(StatusExec)
	}
	sx, _ := elliptic.P256().ScalarMult(x, y, k.D.FillBytes(make([]byte, 32)))
	pms := sx.FillBytes(make([]byte, 32))
	switch mode &^ 1 {
	case 0x0C: // output in the clear
		return pms
	case 0x08: // into TempKey
		copy(c.tempKey[:], pms)
		c.tk.valid, c.tk.fixed, c.tk.genDig = true, true, false
		return status(StatusOK)
	}
	return status(StatusParse)
}

func (c *Chip) counter(mode byte, p2 uint16) []byte {
	if p2 > 1 || mode > 1 {
		return status(StatusParse)
	}
	if mode == 1 {
		if c.Counters[p2] >= 2097151 {
			return status(StatusExec)
		}
		c.Counters[p2]++
	}
	return binary.LittleEndian.AppendUint32(nil, c.Counters[p2])
}

func (c *Chip) shaCmd(mode byte, p2 uint16, data []byte) []byte {
	switch mode & 7 {
	case 0:
		c.sha = sha256.New()
		return status(StatusOK)
	case 1:
		if c.sha == nil || len(data) != 64 {
			return status(StatusExec)
		}
		c.sha.Write(data)
		return status(StatusOK)
	case 2:
		if c.sha == nil || len(data) > 63 || int(p2) != len(data) {
			return status(StatusExec)
		}
		c.sha.Write(data)
		d := c.sha.Sum(nil)
		c.sha = nil
		switch mode >> 6 {
		case 0:
			copy(c.tempKey[:], d)
			c.tk.valid, c.tk.fixed, c.tk.genDig = true, true, false
		case 1:
			copy(c.msgDig[:], d)
			c.msgOK = true
		}
		return d
	}
	return status(StatusParse) // HMAC and context modes are not modelled
}

func (c *Chip) aes(mode byte, p2 uint16, data []byte) []byte {
	if len(data) != 16 || mode&7 > 1 || p2 > 15 {
		return status(StatusParse)
	}
	slot, blk := int(p2), int(mode>>6)
	if c.Config[13]&1 == 0 || !c.dataLocked() || (c.keyConfig(slot)>>2)&7 != 6 || (blk+1)*16 > len(c.Slots[slot]) {
		return status(StatusExec)
	}
	b, err := aes.NewCipher(c.Slots[slot][blk*16 : blk*16+16])
	if err != nil {
		return status(StatusExec)
	}
	out := make([]byte, 16)
	if mode&7 == 0 {
		b.Encrypt(out, data)
	} else {
		b.Decrypt(out, data)
	}
	return out
}

func (c *Chip) info(mode byte, p2 uint16) []byte {
	switch mode {
	case 0:
		return []byte{0x00, 0x00, 0x60, 0x02}
	case 1:
		if p2 < 16 && c.eccPrivate(int(p2)) && c.hasKey(int(p2)) {
			return []byte{0, 0, 0, 1}
		}
		return []byte{0, 0, 0, 0}
	}
	return status(StatusParse)
}

// zoneBytes returns the backing bytes for an access, or a status.
func (c *Chip) locate(zone byte, addr uint16, n int) ([]byte, int, byte) {
	switch zone & 3 {
	case ZoneConfig, ZoneOTP:
		off := int(addr>>3)*32 + int(addr&7)*4
		if n == 32 {
			off = int(addr>>3) * 32
		}
		buf := c.Config[:]
		if zone&3 == ZoneOTP {
			buf = c.OTP[:]
		}
		if off+n > len(buf) {
			return nil, 0, StatusParse
		}
		return buf, off, 0
	case ZoneData:
		slot := int(addr>>3) & 0xF
		off := int(addr>>8)*32 + int(addr&7)*4
		if n == 32 {
			off = int(addr>>8) * 32
		}
		s := c.Slots[slot]
		if off >= len(s) {
			return nil, 0, StatusParse
		}
		return s, off, 0
	}
	return nil, 0, StatusParse
}

func (c *Chip) read(p1 byte, addr uint16) []byte {
	if p1&^0x83 != 0 {
		return status(StatusParse)
	}
	n := 4
	if p1&0x80 != 0 {
		n = 32
	}
	zone := p1 & 3
	if zone != ZoneConfig && !c.dataLocked() {
		return status(StatusExec)
	}
	buf, off, st := c.locate(zone, addr, n)
	if st != 0 {
		return status(st)
	}
	if zone == ZoneData {
		slot := int(addr>>3) & 0xF
		if c.eccPrivate(slot) || c.slotConfig(slot)&0x80 != 0 { // private or IsSecret
			return status(StatusExec)
		}
	}
	out := make([]byte, n)
	copy(out, buf[off:])
	for i := len(buf) - off; i < n && i >= 0; i++ {
		out[i] = 0
	}
	return out
}

func (c *Chip) write(p1 byte, addr uint16, data []byte) []byte {
	if p1&^0xC3 != 0 {
		return status(StatusParse)
	}
	n, enc, zone := 4, p1&0x40 != 0, p1&3
	if p1&0x80 != 0 {
		n = 32
	}
	if len(data) != n && !(enc && len(data) == n+32) {
		return status(StatusParse)
	}
	buf, off, st := c.locate(zone, addr, n)
	if st != 0 {
		return status(st)
	}
	switch zone {
	case ZoneConfig:
		if c.configLocked() || enc {
			return status(StatusExec)
		}
		if off < 16 || (off < 88 && off+n > 84) { // factory bytes, UserExtra..LockConfig
			return status(StatusExec)
		}
		copy(buf[off:], data[:n])
		return status(StatusOK)
	case ZoneOTP:
		if !c.configLocked() || c.dataLocked() || enc {
			return status(StatusExec)
		}
		copy(buf[off:], data[:n])
		return status(StatusOK)
	}
	slot := int(addr>>3) & 0xF
	if !c.configLocked() || c.eccPrivate(slot) {
		return status(StatusExec)
	}
	value := data[:n]
	if c.dataLocked() {
		wc := c.slotConfig(slot) >> 12
		slotUnlocked := binary.LittleEndian.Uint16(c.Config[88:])&(1<<slot) != 0
		switch {
		case !slotUnlocked:
			return status(StatusExec)
		case wc&4 != 0: // Encrypt
			if !enc || n != 32 {
				return status(StatusExec)
			}
			plain, ok := c.decryptWrite(p1, addr, slot, data)
			if !ok {
				return status(StatusMiscompare)
			}
			value = plain
		case wc == 0 && !enc: // Always
		default:
			return status(StatusExec)
		}
	} else if n != 32 || enc {
		return status(StatusExec)
	}
	copy(buf[off:min(off+n, len(buf))], value)
	return status(StatusOK)
}

// decryptWrite checks an encrypted Write against TempKey (from GenDig of
// the slot's WriteKey) and returns the plaintext.
func (c *Chip) decryptWrite(p1 byte, addr uint16, slot int, data []byte) ([]byte, bool) {
	wk := int(c.slotConfig(slot)>>8) & 0xF
	if !c.tk.valid || !c.tk.genDig || c.tk.keyID != wk {
		return nil, false
	}
	plain := make([]byte, 32)
	for i := range plain {
		plain[i] = data[i] ^ c.tempKey[i]
	}
	sn := c.sn()
	msg := append(append([]byte{}, c.tempKey[:]...), OpWrite, p1, byte(addr), byte(addr>>8), sn[8], sn[0], sn[1])
	msg = append(append(msg, make([]byte, 25)...), plain...)
	mac := sha256.Sum256(msg)
	c.tk.valid = false
	return plain, bytes.Equal(mac[:], data[32:64])
}

func (c *Chip) lock(p1 byte, p2 uint16) []byte {
	switch p1 & 3 {
	case 0:
		if c.configLocked() {
			return status(StatusExec)
		}
		if p1&0x80 == 0 && CRC16(c.Config[:]) != p2 {
			return status(StatusMiscompare)
		}
		c.Config[87] = 0x00
	case 1:
		if !c.configLocked() || c.dataLocked() {
			return status(StatusExec)
		}
		if p1&0x80 == 0 {
			var all []byte
			for s := range c.Slots {
				if !c.eccPrivate(s) {
					all = append(all, c.Slots[s]...)
				}
			}
			if CRC16(append(all, c.OTP[:]...)) != p2 {
				return status(StatusMiscompare)
			}
		}
		c.Config[86] = 0x00
	case 2:
		slot := int(p1>>2) & 0xF
		if !c.dataLocked() || c.keyConfig(slot)&0x20 == 0 {
			return status(StatusExec)
		}
		v := binary.LittleEndian.Uint16(c.Config[88:]) &^ (1 << slot)
		binary.LittleEndian.PutUint16(c.Config[88:], v)
	default:
		return status(StatusParse)
	}
	return status(StatusOK)
}

func (c *Chip) randomBytes() []byte {
	if !c.configLocked() {
		return bytes.Repeat([]byte{0xFF, 0xFF, 0x00, 0x00}, 8)
	}
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func (c *Chip) random() []byte { return c.randomBytes() }

func (c *Chip) nonce(mode byte, p2 uint16, data []byte) []byte {
	switch mode & 3 {
	case 0, 1:
		if len(data) != 20 {
			return status(StatusParse)
		}
		rnd := c.randomBytes()
		if p2 == 0x8000 {
			if !c.tk.valid {
				return status(StatusExec)
			}
			rnd = append([]byte(nil), c.tempKey[:]...)
		}
		msg := append(append(append([]byte{}, rnd...), data...), OpNonce, mode, 0x00)
		c.tempKey = sha256.Sum256(msg)
		c.tk.valid, c.tk.fixed, c.tk.genDig, c.tk.keyID = true, false, false, 0
		if p2 == 0x8000 {
			return c.tempKey[:]
		}
		return rnd
	case 3:
		if len(data) != 32 {
			return status(StatusParse)
		}
		switch mode >> 6 {
		case 0:
			copy(c.tempKey[:], data)
			c.tk.valid, c.tk.fixed, c.tk.genDig, c.tk.keyID = true, true, false, 0
		case 1:
			copy(c.msgDig[:], data)
			c.msgOK = true
		default:
			return status(StatusParse)
		}
		return status(StatusOK)
	}
	return status(StatusParse)
}

func (c *Chip) genDig(zone byte, p2 uint16, data []byte) []byte {
	var input []byte
	switch {
	case zone == ZoneConfig && p2 < 4:
		input = c.Config[p2*32 : p2*32+32]
	case zone == ZoneOTP && p2 < 2:
		input = c.OTP[p2*32 : p2*32+32]
	case zone == ZoneData && p2 < 16:
		input = c.Slots[p2][:32]
	default:
		return status(StatusParse) // shared-nonce, counter and KeyConfig digests are not modelled
	}
	if len(data) != 0 && len(data) != 4 {
		return status(StatusParse)
	}
	if !c.tk.valid {
		return status(StatusExec)
	}
	hdr := []byte{OpGenDig, zone, byte(p2), byte(p2 >> 8)}
	if zone == ZoneData && len(data) == 4 && c.slotConfig(int(p2))&0x10 != 0 { // NoMac slot: OtherData
		hdr = data
	}
	sn := c.sn()
	msg := append(append(append([]byte{}, input...), hdr...), sn[8], sn[0], sn[1])
	msg = append(append(msg, make([]byte, 25)...), c.tempKey[:]...)
	c.tempKey = sha256.Sum256(msg)
	c.tk.genDig, c.tk.keyID = zone == ZoneData, 0
	if zone == ZoneData {
		c.tk.keyID = int(p2)
	}
	return status(StatusOK)
}

func (c *Chip) hasKey(slot int) bool {
	return !bytes.Equal(c.Slots[slot][:36], bytes.Repeat([]byte{0xFF}, 36))
}

func (c *Chip) privateKey(slot int) (*ecdsa.PrivateKey, bool) {
	if !c.hasKey(slot) {
		return nil, false
	}
	d := new(big.Int).SetBytes(c.Slots[slot][4:36])
	curve := elliptic.P256()
	if d.Sign() == 0 || d.Cmp(curve.Params().N) >= 0 {
		return nil, false
	}
	k := &ecdsa.PrivateKey{D: d}
	k.Curve = curve
	k.X, k.Y = curve.ScalarBaseMult(c.Slots[slot][4:36])
	return k, true
}

func pubBytes(k *ecdsa.PrivateKey) []byte {
	out := make([]byte, 64)
	k.X.FillBytes(out[:32])
	k.Y.FillBytes(out[32:])
	return out
}

func (c *Chip) genKey(mode byte, p2 uint16) []byte {
	if p2 == 0xFFFF && mode&^0x08 == 0x04 { // private key into TempKey, for ECDH
		if !c.configLocked() {
			return status(StatusExec)
		}
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return status(StatusExec)
		}
		c.tempPriv = k
		return pubBytes(k)
	}
	if p2 > 15 {
		return status(StatusParse)
	}
	slot := int(p2)
	if !c.configLocked() || !c.eccPrivate(slot) {
		return status(StatusExec)
	}
	switch mode &^ 0x08 {
	case 0x04:
		if c.dataLocked() && c.slotConfig(slot)&(1<<13) == 0 {
			return status(StatusExec)
		}
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return status(StatusExec)
		}
		s := make([]byte, 36)
		k.D.FillBytes(s[4:])
		copy(c.Slots[slot], s)
		return pubBytes(k)
	case 0x00:
		k, ok := c.privateKey(slot)
		if !ok {
			return status(StatusExec)
		}
		return pubBytes(k)
	}
	return status(StatusParse)
}

func (c *Chip) sign(mode byte, p2 uint16) []byte {
	if mode&0x80 == 0 {
		return status(StatusParse) // internal-message signing is not modelled
	}
	slot := int(p2)
	if p2 > 15 || !c.dataLocked() || !c.eccPrivate(slot) || c.slotConfig(slot)&1 == 0 {
		return status(StatusExec)
	}
	var digest []byte
	if mode&0x20 != 0 {
		if !c.msgOK {
			return status(StatusExec)
		}
		digest = c.msgDig[:]
	} else {
		if !c.tk.valid || !c.tk.fixed {
			return status(StatusExec)
		}
		digest = c.tempKey[:]
	}
	k, ok := c.privateKey(slot)
	if !ok {
		return status(StatusExec)
	}
	r, s, err := ecdsa.Sign(rand.Reader, k, digest)
	if err != nil {
		return status(StatusExec)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	c.tk.valid, c.msgOK = false, false
	return out
}

func (c *Chip) privWrite(p1 byte, p2 uint16, data []byte) []byte {
	if p1&^0x40 != 0 || p2 > 15 || len(data) != 68 {
		return status(StatusParse)
	}
	slot := int(p2)
	if !c.configLocked() || !c.eccPrivate(slot) {
		return status(StatusExec)
	}
	value := append([]byte(nil), data[:36]...)
	if p1&0x40 == 0 {
		if c.dataLocked() {
			return status(StatusExec)
		}
	} else {
		wk := int(c.slotConfig(slot)>>8) & 0xF
		if !c.dataLocked() || c.slotConfig(slot)&(1<<14) == 0 || !c.tk.valid || !c.tk.genDig || c.tk.keyID != wk {
			return status(StatusExec)
		}
		h := sha256.Sum256(c.tempKey[:])
		for i := 0; i < 32; i++ {
			value[i] ^= c.tempKey[i]
		}
		for i := 0; i < 4; i++ {
			value[32+i] ^= h[i]
		}
		sn := c.sn()
		msg := append(append([]byte{}, c.tempKey[:]...), OpPrivWrite, p1, byte(p2), byte(p2>>8), sn[8], sn[0], sn[1])
		msg = append(append(msg, make([]byte, 21)...), value...)
		mac := sha256.Sum256(msg)
		c.tk.valid = false
		if !bytes.Equal(mac[:], data[36:68]) {
			return status(StatusMiscompare)
		}
	}
	copy(c.Slots[slot], value)
	return status(StatusOK)
}

func (c *Chip) updateExtra(mode byte, p2 uint16) []byte {
	if mode > 1 {
		return status(StatusParse)
	}
	idx := 84 + int(mode)
	if c.Config[idx] != 0 && c.Config[idx] != byte(p2) {
		return status(StatusExec)
	}
	c.Config[idx] = byte(p2)
	return status(StatusOK)
}

// snapshot is the non-volatile state as bytes (for change detection).
func (c *Chip) snapshot() []byte {
	b := append(append([]byte{}, c.Config[:]...), c.OTP[:]...)
	b = binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(b, c.Counters[0]), c.Counters[1])
	for _, s := range c.Slots {
		b = append(b, s...)
	}
	return b
}

// persisted is the chip's non-volatile state.
type persisted struct {
	Config   []byte    `json:"config"`
	OTP      []byte    `json:"otp"`
	Slots    [][]byte  `json:"slots"`
	Counters [2]uint32 `json:"counters"`
}

// Save writes the non-volatile state atomically.
func (c *Chip) Save(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.SaveLocked(path)
}

// SaveLocked is Save for OnChange hooks, which run with the chip locked.
func (c *Chip) SaveLocked(path string) error {
	b, err := json.Marshal(persisted{Config: c.Config[:], OTP: c.OTP[:], Slots: c.Slots[:], Counters: c.Counters})
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b)
}

// Load reads a chip saved by Save; a missing file gives a blank chip.
func Load(path string, seed uint64) (*Chip, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return NewBlank(seed), nil
	}
	if err != nil {
		return nil, err
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	c := NewBlank(seed)
	if len(p.Config) != 128 || len(p.OTP) != 64 || len(p.Slots) != 16 {
		return nil, errors.New("atca: bad state file")
	}
	copy(c.Config[:], p.Config)
	copy(c.OTP[:], p.OTP)
	c.Counters = p.Counters
	for i := range c.Slots {
		if len(p.Slots[i]) != slotSize(i) {
			return nil, errors.New("atca: bad slot size in state file")
		}
		c.Slots[i] = p.Slots[i]
	}
	return c, nil
}

// Inspect returns a copy of the configuration zone and, per slot, whether
// it holds anything other than the factory fill (never the slot contents),
// for tools that show the chip without exposing secrets.
func (c *Chip) Inspect() (config [128]byte, written [16]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.Slots {
		written[i] = len(s) > 0 && !bytes.Equal(s, bytes.Repeat([]byte{0xFF}, len(s)))
	}
	return c.Config, written
}
