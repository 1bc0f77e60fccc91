package devtls

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"sync"

	"github.com/mosemu/mosemu/atca"
	atcahost "github.com/mosemu/mosemu/atca/host"
	"github.com/mosemu/mosemu/tls/tls12"
)

// slotTempKey is MBEDTLS_ATCA_SLOT_TEMPKEY: the chip's TempKey as a slot.
const slotTempKey = 16

// ATCAOffload is mbedTLS's crypto-chip offload as the Mongoose OS fork has
// it (library/ecp_atca.c): ECDHE keys are made on the chip, in TempKey
// when the chip is an ATECC608A and no other connection holds it, else in
// a slot of sys.atca.ecdh_slots_mask picked with a random byte; P-256
// signatures are verified by the chip. One per firmware boot.
type ATCAOffload struct {
	d      *atcahost.Driver
	mask   int
	is608  bool
	log    *slog.Logger
	mu     sync.Mutex
	tkBusy bool
}

// NewATCAOffload returns the offload for the chip behind d.
func NewATCAOffload(d *atcahost.Driver, ecdhSlotsMask int, log *slog.Logger) *ATCAOffload {
	o := &ATCAOffload{d: d, mask: ecdhSlotsMask & 0xFF, log: log}
	if rev, err := d.Info(); err == nil && len(rev) == 4 && rev[2] >= 0x60 {
		o.is608 = true
	}
	return o
}

func (o *ATCAOffload) logf(src, format string, a ...any) {
	o.log.Info(fmt.Sprintf(format, a...), "src", src)
}

func statusOf(err error) byte {
	var e *atcahost.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0xE0 // ATCA_FUNC_FAIL
}

func (o *ATCAOffload) claimTempKey() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.tkBusy {
		return false
	}
	o.tkBusy = true
	return true
}

func (o *ATCAOffload) releaseTempKey() {
	o.mu.Lock()
	o.tkBusy = false
	o.mu.Unlock()
}

// ecdhSlot is get_ecdh_slot: the slots of mask share the byte range
// evenly, and rnd picks one.
func ecdhSlot(mask int, rnd uint8) int {
	n := bits.OnesCount(uint(mask))
	if n == 0 {
		return -1
	}
	step, t, slot := 256/n, 0, 0
	for mask != 0 {
		if mask&1 != 0 {
			t += step
			if t > int(rnd) {
				break
			}
		}
		if mask >>= 1; mask != 0 {
			slot++
		}
	}
	return slot
}

// GenerateECDH implements tls12.Chip (ecp_atca_ecdh_gen_keypair).
func (o *ATCAOffload) GenerateECDH(rand io.Reader) (tls12.ECDHKey, error) {
	if o.is608 && o.claimTempKey() {
		if k, err := o.genSlot(slotTempKey, 0); err == nil {
			return k, nil
		}
		o.releaseTempKey()
	}
	var b [4]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return nil, err
	}
	rnd := int32(binary.LittleEndian.Uint32(b[:])) // an int filled by f_rng on a little-endian CPU
	slot := ecdhSlot(o.mask, uint8(rnd))
	if slot < 0 {
		return nil, errors.New("no ECDH slots")
	}
	return o.genSlot(slot, rnd)
}

func (o *ATCAOffload) genSlot(slot int, rnd int32) (*chipECDHKey, error) {
	gen := slot == slotTempKey || rnd>>2 == 42 // SHOULD_REGEN: new slot keys rarely, to spare the EEPROM
	p2 := uint16(slot)
	if slot == slotTempKey {
		p2 = 0xFFFF
	}
	for {
		mode := byte(0x00) // get the public key
		if gen {
			mode = 0x04
		}
		pub, err := o.d.Exec(atca.OpGenKey, mode, p2, nil)
		if err == nil && len(pub) == 64 {
			what := "get"
			if gen {
				what = "gen"
			}
			o.logf("ecp_atca.c:232", "ATCA:%d ECDH %s pubkey ok", slot, what)
			return &chipECDHKey{o: o, slot: slot, pub: append([]byte{4}, pub...)}, nil
		}
		st := statusOf(err)
		what := "get"
		if gen {
			what = "gen"
		}
		o.logf("ecp_atca.c:216", "ATCA:%d failed to %s ECDH pubkey: 0x%02x", slot, what, st)
		if gen || st != 0xF4 { // ATCA_EXECUTION_ERROR: the slot never had a key
			return nil, fmt.Errorf("ATCA:%d ECDH pubkey: 0x%02x", slot, st)
		}
		gen = true
	}
}

// SlotECDH implements tls12.Chip: ECDH with a slot's key, clear output.
func (o *ATCAOffload) SlotECDH(slot int, peer []byte) ([]byte, error) {
	return o.ecdh(slot, peer)
}

func (o *ATCAOffload) ecdh(slot int, peer []byte) ([]byte, error) {
	if _, err := ecdh.P256().NewPublicKey(peer); err != nil {
		return nil, errors.New("bad peer point")
	}
	mode := byte(0x0C) // ECDH_MODE_COPY_OUTPUT_BUFFER | ECDH_MODE_OUTPUT_CLEAR
	if slot == slotTempKey {
		mode |= 0x01 // ECDH_MODE_SOURCE_TEMPKEY; param2 stays 16, as the fork sends it
	}
	pms, err := o.d.Exec(atca.OpECDH, mode, uint16(slot), peer[1:])
	if err != nil || len(pms) != 32 {
		o.logf("ecp_atca.c:289", "ATCA:%d ECDH failed: 0x%02x", slot, statusOf(err))
		return nil, fmt.Errorf("ATCA:%d ECDH failed: 0x%02x", slot, statusOf(err))
	}
	o.logf("ecp_atca.c:293", "ATCA:%d ECDH ok", slot)
	return pms, nil
}

// VerifyECDSA implements tls12.Chip (ecdsa_atca_verify).
func (o *ATCAOffload) VerifyECDSA(pub *ecdsa.PublicKey, digest, rs []byte) (bool, error) {
	k, err := pub.ECDH()
	if err != nil {
		return false, err
	}
	ok, err := o.d.Verify(digest, rs, k.Bytes()[1:])
	if err != nil {
		o.logf("ecp_atca.c:175", "ATCA ECDSA verify failed: 0x%02x", statusOf(err))
		return false, err
	}
	not := "NOT "
	if ok {
		not = ""
	}
	o.logf("ecp_atca.c:178", "ATCA ECDSA verify ok, %sverified", not)
	return ok, nil
}

// chipECDHKey is an ECDH key in TempKey or a slot.
type chipECDHKey struct {
	o        *ATCAOffload
	slot     int
	pub      []byte
	released bool
}

func (k *chipECDHKey) Public() []byte { return k.pub }

func (k *chipECDHKey) Shared(peer []byte) ([]byte, error) {
	defer k.Release()
	return k.o.ecdh(k.slot, peer)
}

// Release gives TempKey back (mbedtls_ecdh_free).
func (k *chipECDHKey) Release() {
	if k.slot == slotTempKey && !k.released {
		k.released = true
		k.o.releaseTempKey()
	}
}
