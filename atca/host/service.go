package host

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/mosemu/mosemu/rpc"
)

func code(err error) byte {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0xE1
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// RegisterService registers the ATCA.* methods of Mongoose OS's
// rpc-service-atca over the driver.
func RegisterService(r rpc.Registrar, d *Driver) {
	r.Register("ATCA.GetConfig", "", func(context.Context, *rpc.Request) (json.RawMessage, error) {
		cfg, err := d.ReadConfig()
		if err != nil {
			return nil, rpc.Errorf(500, "Failed to read config zone: 0x%02x", code(err))
		}
		return json.RawMessage(fmt.Sprintf(`{"config": %q}`, b64(cfg))), nil
	})
	r.Register("ATCA.SetConfig", "{config: %V}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct{ Config []byte }
		json.Unmarshal(req.Params, &a)
		if len(a.Config) != 128 {
			return nil, rpc.Errorf(400, "Expected 128 bytes, got %d", len(a.Config))
		}
		if err := d.WriteConfig(a.Config); err != nil {
			return nil, rpc.Errorf(500, "Failed to set config: 0x%02x", code(err))
		}
		return nil, nil
	})
	r.Register("ATCA.LockZone", "{zone: %d}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct{ Zone *int }
		json.Unmarshal(req.Params, &a)
		if a.Zone == nil || (*a.Zone != 0 && *a.Zone != 1) {
			return nil, rpc.Errorf(403, "Invalid zone")
		}
		if err := d.LockZone(*a.Zone); err != nil {
			return nil, rpc.Errorf(500, "Failed to lock zone %d: 0x%02x", *a.Zone, code(err))
		}
		return nil, nil
	})
	r.Register("ATCA.SetKey", "{slot: %d, block: %d, ecc: %B, key: %V, wkey: %V, wkslot: %u}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			Slot, Block, WKSlot int
			ECC                 bool
			Key, WKey           []byte
		}
		var raw struct {
			Slot   *int   `json:"slot"`
			Block  int    `json:"block"`
			ECC    bool   `json:"ecc"`
			Key    []byte `json:"key"`
			WKey   []byte `json:"wkey"`
			WKSlot int    `json:"wkslot"`
		}
		json.Unmarshal(req.Params, &raw)
		if raw.Slot == nil || !validSlot(*raw.Slot) || !validSlot(raw.WKSlot) {
			return nil, rpc.Errorf(400, "Invalid slot")
		}
		if raw.Block < 0 || raw.Block > 12 { // slot 8, the largest, has 13 blocks
			return nil, rpc.Errorf(400, "Invalid block")
		}
		a.Slot, a.Block, a.ECC, a.Key, a.WKey, a.WKSlot = *raw.Slot, raw.Block, raw.ECC, raw.Key, raw.WKey, raw.WKSlot
		if len(a.WKey) != 0 && len(a.WKey) != 32 {
			return nil, rpc.Errorf(400, "Invalid write key length")
		}
		var wkey []byte
		if len(a.WKey) == 32 {
			wkey = a.WKey
		}
		var err error
		switch {
		case a.ECC:
			if len(a.Key) > 32 {
				return nil, rpc.Errorf(400, "Expected <= 32 bytes, got %d", len(a.Key))
			}
			err = d.PrivWrite(a.Slot, a.Key, wkey, a.WKSlot)
		case wkey != nil:
			if len(a.Key) != 32 {
				return nil, rpc.Errorf(400, "Expected 32 bytes, got %d", len(a.Key))
			}
			err = d.WriteBlockEncrypted(a.Slot, a.Block, a.Key, wkey, a.WKSlot)
		default:
			if len(a.Key) != 32 && len(a.Key) != 4 {
				return nil, rpc.Errorf(400, "Expected 4 or 32 bytes, got %d", len(a.Key))
			}
			err = d.WriteBlock(a.Slot, a.Block, a.Key)
		}
		if err != nil {
			return nil, rpc.Errorf(500, "Failed to set key: 0x%02x", code(err))
		}
		return nil, nil
	})
	r.Register("ATCA.GenKey", "{slot: %d}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct{ Slot int }
		json.Unmarshal(req.Params, &a)
		if !validSlot(a.Slot) {
			return nil, rpc.Errorf(400, "Invalid slot")
		}
		pub, err := d.GenKey(a.Slot)
		if err != nil {
			return nil, rpc.Errorf(500, "Failed generate key on slot %d: 0x%02x", a.Slot, code(err))
		}
		return json.RawMessage(fmt.Sprintf(`{"pubkey": %q}`, b64(pub))), nil
	})
	r.Register("ATCA.GetPubKey", "{slot: %d}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct{ Slot int }
		json.Unmarshal(req.Params, &a)
		if !validSlot(a.Slot) {
			return nil, rpc.Errorf(400, "Invalid slot")
		}
		pub, err := d.PublicKey(a.Slot)
		if err != nil {
			return nil, rpc.Errorf(500, "Failed get public key for slot %d: 0x%02x", a.Slot, code(err))
		}
		return json.RawMessage(fmt.Sprintf(`{"pubkey": %q}`, b64(pub))), nil
	})
	r.Register("ATCA.AES", "{slot: %d, block: %d, mode: %d, data: %V}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			Slot, Block, Mode int
			Data              []byte
		}
		json.Unmarshal(req.Params, &a)
		if !validSlot(a.Slot) {
			return nil, rpc.Errorf(400, "Invalid slot")
		}
		if len(a.Data) == 0 || len(a.Data)%16 != 0 || a.Mode < 0 || a.Mode > 1 || a.Block < 0 || a.Block > 3 {
			return nil, rpc.Errorf(400, "Invalid args")
		}
		out, err := d.AES(a.Slot, a.Block, a.Mode, a.Data)
		if err != nil {
			return nil, rpc.Errorf(500, "AES failed: 0x%02x", code(err))
		}
		return json.RawMessage(fmt.Sprintf(`{"data": %q}`, b64(out))), nil
	})
	r.Register("ATCA.Sign", "{slot: %d, digest: %V}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			Slot   int
			Digest []byte
		}
		json.Unmarshal(req.Params, &a)
		if !validSlot(a.Slot) {
			return nil, rpc.Errorf(400, "Invalid slot")
		}
		if len(a.Digest) != 32 {
			return nil, rpc.Errorf(400, "Expected 32 bytes, got %d", len(a.Digest))
		}
		sig, err := d.Sign(a.Slot, a.Digest)
		if err != nil {
			return nil, rpc.Errorf(500, "Failed to sign: 0x%02x", code(err))
		}
		return json.RawMessage(fmt.Sprintf(`{"signature": %q}`, b64(sig))), nil
	})
}

// validSlot reports whether n names one of the chip's 16 slots (the
// command's 16-bit key id would otherwise wrap: slot -65536 acting as 0).
func validSlot(n int) bool { return n >= 0 && n <= 15 }

// InitLine probes the chip as mgos_atca_init does and returns the log line.
func InitLine(d *Driver, bus, addr int, ecdhMask int) string {
	rev, err := d.Info()
	if err != nil {
		return "ATCA: Chip is not available"
	}
	sn, err := d.serial()
	if err != nil {
		return "ATCA: Chip is not available"
	}
	cl, dl, _ := d.Locked()
	yn := map[bool]string{true: "yes", false: "no"}
	return fmt.Sprintf("ATECC608A @ %d/0x%02x: rev 0x%04x S/N 0x%x, zone lock status: %s, %s; ECDH slots: 0x%02x",
		bus, addr, int(rev[2])<<8|int(rev[3]), sn, yn[cl], yn[dl], ecdhMask)
}

// Signer is a crypto.Signer whose private key lives in a chip slot (TLS
// keys named ATCA:N).
type Signer struct {
	D    *Driver
	Slot int
	Log  *slog.Logger
	pub  *ecdsa.PublicKey
}

// NewSigner reads the slot's public key.
func NewSigner(d *Driver, slot int, log *slog.Logger) (*Signer, error) {
	raw, err := d.PublicKey(slot)
	if err != nil {
		return nil, fmt.Errorf("ATCA:%d: %w", slot, err)
	}
	pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(raw[:32]), Y: new(big.Int).SetBytes(raw[32:])}
	return &Signer{D: d, Slot: slot, Log: log, pub: pub}, nil
}

// ChipSlot is the key's slot (tls12.ChipKey).
func (s *Signer) ChipSlot() int { return s.Slot }

// Public implements crypto.Signer.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Sign implements crypto.Signer: the chip signs the 32-byte digest; the
// result is ASN.1 DER as ecdsa.SignASN1 returns.
func (s *Signer) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	if len(digest) != 32 { // the chip signs 256-bit digests only
		s.Log.Error(fmt.Sprintf("ATCA:%d ECDSA sign failed: expected 32 bytes to sign, got %d", s.Slot, len(digest)), "src", "ecp_atca.c:90")
		return nil, fmt.Errorf("ATCA:%d: cannot sign a %d-byte digest", s.Slot, len(digest))
	}
	rs, err := s.D.Sign(s.Slot, digest)
	if err != nil {
		s.Log.Error(fmt.Sprintf("ATCA:%d ECDSA sign failed: 0x%02x", s.Slot, code(err)), "src", "ecp_atca.c:94")
		return nil, err
	}
	s.Log.Info(fmt.Sprintf("ATCA:%d ECDSA sign ok", s.Slot), "src", "ecp_atca.c:105")
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(new(big.Int).SetBytes(rs[:32]))
		b.AddASN1BigInt(new(big.Int).SetBytes(rs[32:]))
	})
	return b.Bytes()
}
