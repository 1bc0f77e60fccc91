// Package host is the host side of the ATECC608A, the part cryptoauthlib
// plays on the device's MCU: command framing over I2C, and the operations
// Mongoose OS uses, including the encrypted key writes whose TempKey and
// MAC are computed host-side from the public formulas. It also provides
// the ATCA.* RPC service.
package host

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/mosemu/mosemu/atca"
)

// Bus is an I2C bus (the emulator's virtual bus, or a test double).
type Bus interface {
	Write(addr byte, p []byte) error
	Read(addr byte, p []byte) (int, error)
}

// Error is a cryptoauthlib status (ATCA_STATUS), e.g. 0xF4 execution error.
type Error struct{ Code byte }

func (e *Error) Error() string { return fmt.Sprintf("ATCA error 0x%02x", e.Code) }

// statusMap turns device status bytes into cryptoauthlib codes.
var statusMap = map[byte]byte{
	atca.StatusMiscompare: 0xD1, atca.StatusParse: 0xD2, 0x05: 0xD6, 0x07: 0xD7, 0x08: 0xFA,
	atca.StatusExec: 0xF4, atca.StatusCRC: 0xD4, 0xEE: 0xE1,
}

// Driver talks to one chip. Safe for concurrent use.
type Driver struct {
	bus  Bus
	addr byte
	mu   sync.Mutex
}

// New returns a driver for the chip at the 7-bit address addr.
func New(bus Bus, addr byte) *Driver { return &Driver{bus: bus, addr: addr} }

// Exec runs one command: wake, send, read the response, check its CRC and
// status, idle. It returns the response data.
func (d *Driver) Exec(op, p1 byte, p2 uint16, data []byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.bus.Write(0x00, []byte{0x00}) // wake pulse (NACK expected)
	wake := make([]byte, 4)
	if _, err := d.bus.Read(d.addr, wake); err != nil {
		return nil, &Error{0xF0} // ATCA_WAKE_FAILED-like: no device
	}
	pkt := append([]byte{byte(7 + len(data)), op, p1, byte(p2), byte(p2 >> 8)}, data...)
	crc := atca.CRC16(pkt)
	pkt = append(pkt, byte(crc), byte(crc>>8))
	defer d.bus.Write(d.addr, []byte{0x02}) // idle
	if err := d.bus.Write(d.addr, append([]byte{0x03}, pkt...)); err != nil {
		return nil, &Error{0xE7}
	}
	d.bus.Write(d.addr, []byte{0x00}) // reset the read pointer
	cnt := make([]byte, 1)
	if _, err := d.bus.Read(d.addr, cnt); err != nil {
		return nil, &Error{0xE6}
	}
	if cnt[0] < 4 || cnt[0] > 192 {
		return nil, &Error{0xE6}
	}
	rest := make([]byte, cnt[0]-1)
	if _, err := d.bus.Read(d.addr, rest); err != nil {
		return nil, &Error{0xE6}
	}
	resp := append(cnt, rest...)
	c := atca.CRC16(resp[:len(resp)-2])
	if byte(c) != resp[len(resp)-2] || byte(c>>8) != resp[len(resp)-1] {
		return nil, &Error{0xE5}
	}
	body := resp[1 : len(resp)-2]
	if len(body) == 1 {
		if body[0] == atca.StatusOK {
			return nil, nil
		}
		if code, ok := statusMap[body[0]]; ok {
			return nil, &Error{code}
		}
		return nil, &Error{0xE1}
	}
	return body, nil
}

// Info returns the 4-byte revision.
func (d *Driver) Info() ([]byte, error) { return d.Exec(atca.OpInfo, 0, 0, nil) }

// ReadConfig reads the 128-byte configuration zone.
func (d *Driver) ReadConfig() ([]byte, error) {
	var cfg []byte
	for b := 0; b < 4; b++ {
		blk, err := d.Exec(atca.OpRead, 0x80|atca.ZoneConfig, uint16(b<<3), nil)
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", b, err)
		}
		cfg = append(cfg, blk...)
	}
	return cfg, nil
}

// WriteConfig writes config bytes 16..127 except 84..87, then UserExtra
// and UserExtraAdd with UpdateExtra, as cryptoauthlib does.
func (d *Driver) WriteConfig(cfg []byte) error {
	if len(cfg) != 128 {
		return fmt.Errorf("config is %d bytes, want 128", len(cfg))
	}
	w4 := func(word int) error {
		_, err := d.Exec(atca.OpWrite, atca.ZoneConfig, uint16(word), cfg[word*4:word*4+4])
		return err
	}
	w32 := func(block int) error {
		_, err := d.Exec(atca.OpWrite, 0x80|atca.ZoneConfig, uint16(block<<3), cfg[block*32:block*32+32])
		return err
	}
	for _, f := range []func() error{
		func() error { return w4(4) }, func() error { return w4(5) }, func() error { return w4(6) }, func() error { return w4(7) },
		func() error { return w32(1) },
		func() error { return w4(16) }, func() error { return w4(17) }, func() error { return w4(18) }, func() error { return w4(19) },
		func() error { return w4(20) }, func() error { return w4(22) }, func() error { return w4(23) },
		func() error { return w32(3) },
	} {
		if err := f(); err != nil {
			return err
		}
	}
	if _, err := d.Exec(atca.OpUpdateExtra, 0, uint16(cfg[84]), nil); err != nil {
		return err
	}
	_, err := d.Exec(atca.OpUpdateExtra, 1, uint16(cfg[85]), nil)
	return err
}

// LockZone locks the config (0) or data (1) zone without a summary CRC.
func (d *Driver) LockZone(zone int) error {
	_, err := d.Exec(atca.OpLock, 0x80|byte(zone), 0, nil)
	return err
}

// GenKey creates a private key in slot and returns the public key X‖Y.
func (d *Driver) GenKey(slot int) ([]byte, error) {
	return d.Exec(atca.OpGenKey, 0x04, uint16(slot), nil)
}

// PublicKey computes the public key of the private key in slot.
func (d *Driver) PublicKey(slot int) ([]byte, error) {
	return d.Exec(atca.OpGenKey, 0x00, uint16(slot), nil)
}

// Sign signs a 32-byte digest with the key in slot: Random, Nonce into the
// message digest buffer, Sign external. It returns R‖S.
func (d *Driver) Sign(slot int, digest []byte) ([]byte, error) {
	if len(digest) != 32 {
		return nil, fmt.Errorf("digest is %d bytes, want 32", len(digest))
	}
	if _, err := d.Exec(atca.OpRandom, 0, 0, nil); err != nil {
		return nil, err
	}
	if _, err := d.Exec(atca.OpNonce, 0x43, 0, digest); err != nil {
		return nil, err
	}
	return d.Exec(atca.OpSign, 0xA0, uint16(slot), nil)
}

// serial reads the 9-byte serial number.
func (d *Driver) serial() ([]byte, error) {
	blk, err := d.Exec(atca.OpRead, 0x80|atca.ZoneConfig, 0, nil)
	if err != nil {
		return nil, err
	}
	return append(append([]byte{}, blk[0:4]...), blk[8:13]...), nil
}

// authTempKey runs Nonce and GenDig(data, wkSlot) on the chip and returns
// the TempKey the chip now holds, computed host-side from the write key.
func (d *Driver) authTempKey(wkSlot int, wkey []byte) ([32]byte, []byte, error) {
	sn, err := d.serial()
	if err != nil {
		return [32]byte{}, nil, err
	}
	numIn := make([]byte, 20)
	randOut, err := d.Exec(atca.OpNonce, 0x00, 0, numIn)
	if err != nil {
		return [32]byte{}, nil, err
	}
	tk := sha256.Sum256(append(append(append([]byte{}, randOut...), numIn...), atca.OpNonce, 0x00, 0x00))
	other := []byte{atca.OpGenDig, atca.ZoneData, byte(wkSlot), byte(wkSlot >> 8)}
	if _, err := d.Exec(atca.OpGenDig, atca.ZoneData, uint16(wkSlot), other); err != nil {
		return [32]byte{}, nil, err
	}
	msg := append(append(append([]byte{}, wkey...), other...), sn[8], sn[0], sn[1])
	msg = append(append(msg, make([]byte, 25)...), tk[:]...)
	return sha256.Sum256(msg), sn, nil
}

// WriteBlock writes 32 bytes (or 4) in the clear at block of slot.
func (d *Driver) WriteBlock(slot, block int, data []byte) error {
	p1 := byte(atca.ZoneData)
	if len(data) == 32 {
		p1 |= 0x80
	}
	_, err := d.Exec(atca.OpWrite, p1, uint16(block<<8|slot<<3), data)
	return err
}

// WriteBlockEncrypted writes 32 bytes at block of slot encrypted and
// MACed with the write key held in wkSlot.
func (d *Driver) WriteBlockEncrypted(slot, block int, data, wkey []byte, wkSlot int) error {
	tk, sn, err := d.authTempKey(wkSlot, wkey)
	if err != nil {
		return err
	}
	addr := uint16(block<<8 | slot<<3)
	enc := make([]byte, 32)
	for i := range enc {
		enc[i] = data[i] ^ tk[i]
	}
	msg := append(append([]byte{}, tk[:]...), atca.OpWrite, 0xC2, byte(addr), byte(addr>>8), sn[8], sn[0], sn[1])
	mac := sha256.Sum256(append(append(msg, make([]byte, 25)...), data...))
	_, err = d.Exec(atca.OpWrite, 0xC2, addr, append(enc, mac[:]...))
	return err
}

// PrivWrite stores a P-256 private key (32-byte scalar) in slot, in the
// clear or, with wkey, encrypted and MACed.
func (d *Driver) PrivWrite(slot int, key, wkey []byte, wkSlot int) error {
	if len(key) > 32 {
		return fmt.Errorf("key is %d bytes", len(key))
	}
	value := make([]byte, 36)
	copy(value[36-len(key):], key)
	if wkey == nil {
		_, err := d.Exec(atca.OpPrivWrite, 0x00, uint16(slot), append(value, make([]byte, 32)...))
		return err
	}
	tk, sn, err := d.authTempKey(wkSlot, wkey)
	if err != nil {
		return err
	}
	h := sha256.Sum256(tk[:])
	enc := bytes.Clone(value)
	for i := 0; i < 32; i++ {
		enc[i] ^= tk[i]
	}
	for i := 0; i < 4; i++ {
		enc[32+i] ^= h[i]
	}
	msg := append(append([]byte{}, tk[:]...), atca.OpPrivWrite, 0x40, byte(slot), byte(slot>>8), sn[8], sn[0], sn[1])
	mac := sha256.Sum256(append(append(msg, make([]byte, 21)...), value...))
	_, err = d.Exec(atca.OpPrivWrite, 0x40, uint16(slot), append(enc, mac[:]...))
	return err
}

// Locked reports the config and data lock state.
func (d *Driver) Locked() (config, data bool, err error) {
	w, err := d.Exec(atca.OpRead, atca.ZoneConfig, 0x15, nil)
	if err != nil {
		return false, false, err
	}
	return w[3] != 0x55, w[2] != 0x55, nil
}

// Verify checks an ECDSA P-256 signature (R‖S) of a 32-byte digest with an
// external public key (X‖Y), as mbedTLS does through the chip.
func (d *Driver) Verify(digest, sig, pub []byte) (bool, error) {
	if _, err := d.Exec(atca.OpNonce, 0x43, 0, digest); err != nil {
		return false, err
	}
	_, err := d.Exec(atca.OpVerify, 0x22, 0x0004, append(append([]byte{}, sig...), pub...))
	var e *Error
	if errors.As(err, &e) && e.Code == 0xD1 {
		return false, nil
	}
	return err == nil, err
}

// ECDH computes the shared secret (X coordinate) of the private key in
// slot and a peer public key, output in the clear (mode 0x0C).
func (d *Driver) ECDH(slot int, peer []byte) ([]byte, error) {
	return d.Exec(atca.OpECDH, 0x0C, uint16(slot), peer)
}

// ECDHEphemeral creates a key in TempKey, returns its public key and a
// function computing the shared secret with a peer (mbedTLS ECDHE: GenKey
// 0xFFFF, then ECDH 0x0D with key id 16).
func (d *Driver) ECDHEphemeral() ([]byte, func(peer []byte) ([]byte, error), error) {
	pub, err := d.Exec(atca.OpGenKey, 0x04, 0xFFFF, nil)
	if err != nil {
		return nil, nil, err
	}
	return pub, func(peer []byte) ([]byte, error) { return d.Exec(atca.OpECDH, 0x0D, 0x0010, peer) }, nil
}

// Counter reads (or increments, then reads) counter id.
func (d *Driver) Counter(id int, increment bool) (uint32, error) {
	mode := byte(0)
	if increment {
		mode = 1
	}
	b, err := d.Exec(atca.OpCounter, mode, uint16(id), nil)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// SHA256 hashes data on the chip.
func (d *Driver) SHA256(data []byte) ([]byte, error) {
	if _, err := d.Exec(atca.OpSHA, 0, 0, nil); err != nil {
		return nil, err
	}
	for len(data) >= 64 {
		if _, err := d.Exec(atca.OpSHA, 1, 64, data[:64]); err != nil {
			return nil, err
		}
		data = data[64:]
	}
	return d.Exec(atca.OpSHA, 0xC2, uint16(len(data)), data)
}

// AES encrypts (mode 0) or decrypts (mode 1) 16-byte blocks with the AES
// key at block of slot.
func (d *Driver) AES(slot, block, mode int, data []byte) ([]byte, error) {
	if len(data)%16 != 0 {
		return nil, fmt.Errorf("data is %d bytes, not a multiple of 16", len(data))
	}
	var out []byte
	for i := 0; i < len(data); i += 16 {
		b, err := d.Exec(atca.OpAES, byte(block<<6|mode), uint16(slot), data[i:i+16])
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}
