package atca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/mosemu/mosemu/emu/i2c"
)

func TestCRCVectors(t *testing.T) {
	for _, tt := range []struct{ in, wire string }{
		{"0411", "04113343"},
		{"0400", "04000340"},
		{"040f", "040f2342"},
		{"04ff", "04ff0142"},
		{"0730000000", "0730000000035d"},
		{"0700006002", "07000060028038"},
		{"0702800000", "070280000009ad"},
		{"071b000000", "071b00000024cd"},
		{"0717800000", "0717800000398d"},
		{"0740040000", "07400400008387"},
		{"0b15020400150204 00", "0b1502040015020400d2ec"},
	} {
		in, _ := hex.DecodeString(stripSpaces(tt.in))
		crc := CRC16(in)
		got := hex.EncodeToString(append(in, byte(crc), byte(crc>>8)))
		if got != tt.wire {
			t.Errorf("CRC of %s: %s, want %s", tt.in, got, tt.wire)
		}
	}
}

func stripSpaces(s string) string { return string(bytes.ReplaceAll([]byte(s), []byte(" "), nil)) }

func cmd(op, p1 byte, p2 uint16, data []byte) []byte {
	pkt := append([]byte{byte(7 + len(data)), op, p1, byte(p2), byte(p2 >> 8)}, data...)
	crc := CRC16(pkt)
	return append([]byte{0x03}, append(pkt, byte(crc), byte(crc>>8))...)
}

func TestTransport(t *testing.T) {
	c := NewBlank(1)
	bus := i2c.NewBus()
	bus.Attach(0x60, c)
	buf := make([]byte, 4)
	if _, err := bus.Read(0x60, buf); err == nil {
		t.Fatal("asleep chip acknowledged a read")
	}
	bus.Write(0x00, []byte{0}) // wake pulse
	bus.Read(0x60, buf)
	if hex.EncodeToString(buf) != "04113343" {
		t.Fatalf("wake response %x", buf)
	}
	bus.Write(0x60, cmd(OpInfo, 0, 0, nil))
	out := make([]byte, 7)
	bus.Write(0x60, []byte{0x00})
	bus.Read(0x60, out[:1]) // count, then the rest in a separate read
	bus.Read(0x60, out[1:])
	if hex.EncodeToString(out) != "07000060028038" {
		t.Fatalf("Info response %x", out)
	}
	bad := cmd(OpInfo, 0, 0, nil)
	bad[len(bad)-1] ^= 1
	bus.Write(0x60, bad)
	bus.Read(0x60, buf)
	if buf[1] != StatusCRC {
		t.Fatalf("bad CRC answered %x", buf)
	}
	bus.Write(0x60, cmd(OpRandom, 0, 0, nil))
	rnd := make([]byte, 35)
	bus.Read(0x60, rnd)
	if !bytes.Equal(rnd[1:33], bytes.Repeat([]byte{0xFF, 0xFF, 0, 0}, 8)) {
		t.Fatalf("Random on an unlocked chip %x", rnd)
	}
	bus.Write(0x60, []byte{0x01}) // sleep
	if _, err := bus.Read(0x60, buf); err == nil {
		t.Fatal("sleeping chip acknowledged a read")
	}
}

func FuzzCommand(f *testing.F) {
	f.Add(cmd(OpRead, 0x80, 0, nil))
	f.Add(cmd(OpNonce, 0x03, 0, make([]byte, 32)))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := NewBlank(2)
		c.Wake()
		c.I2CWrite(b)
		out := make([]byte, 80)
		c.I2CRead(out)
	})
}

// BenchmarkSign is a full Sign through the I2C framing (Random, Nonce,
// Sign); BenchmarkSignECDSABaseline is crypto/ecdsa alone.
func BenchmarkSign(b *testing.B) {
	c := NewBlank(3)
	c.Config[86], c.Config[87] = 0, 0
	c.Config[20] = 0x81 // slot 0 external signing
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k.D.FillBytes(c.Slots[0][4:36])
	c.Wake()
	digest := make([]byte, 32)
	out := make([]byte, 67)
	for b.Loop() {
		c.I2CWrite(cmd(OpRandom, 0, 0, nil))
		c.I2CWrite(cmd(OpNonce, 0x43, 0, digest))
		c.I2CWrite(cmd(OpSign, 0xA0, 0, nil))
		c.I2CWrite([]byte{0})
		c.I2CRead(out)
		if out[0] != 67 {
			b.Fatalf("sign failed: %x", out[:4])
		}
	}
}

func BenchmarkSignECDSABaseline(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := make([]byte, 32)
	for b.Loop() {
		ecdsa.SignASN1(rand.Reader, k, digest)
	}
}
