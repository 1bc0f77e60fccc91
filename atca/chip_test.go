package atca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

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
	digest := make([]byte, 32)
	out := make([]byte, 67)
	for b.Loop() {
		c.Wake() // as drivers do before every command: the watchdog sleeps an idle-less chip
		c.I2CWrite(cmd(OpRandom, 0, 0, nil))
		c.I2CWrite(cmd(OpNonce, 0x43, 0, digest))
		c.I2CWrite(cmd(OpSign, 0xA0, 0, nil))
		c.I2CWrite([]byte{0})
		c.I2CRead(out)
		if out[0] != 67 {
			b.Fatalf("sign failed: %x", out[:4])
		}
		c.I2CWrite([]byte{0x02}) // idle
	}
}

func BenchmarkSignECDSABaseline(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := make([]byte, 32)
	for b.Loop() {
		ecdsa.SignASN1(rand.Reader, k, digest)
	}
}

func exec(t *testing.T, c *Chip, op, p1 byte, p2 uint16, data []byte) []byte {
	t.Helper()
	if err := c.I2CWrite(cmd(op, p1, p2, data)); err != nil {
		t.Fatalf("op %#x: %v", op, err)
	}
	c.I2CWrite([]byte{0})
	n := make([]byte, 1)
	c.I2CRead(n)
	rest := make([]byte, n[0]-1)
	c.I2CRead(rest)
	return rest[:len(rest)-2]
}

// TestMACAndCheckMac computes a MAC on the chip (key in slot 3), checks it
// against the formula, then has CheckMac accept it and refuse a tampered one.
func TestMACAndCheckMac(t *testing.T) {
	c := NewBlank(4)
	c.Config[86], c.Config[87] = 0, 0
	key := bytes.Repeat([]byte{0x42}, 32)
	copy(c.Slots[3], key)
	c.Wake()
	chal := bytes.Repeat([]byte{7}, 32)
	mac := exec(t, c, OpMAC, 0x00, 3, chal)
	sn := c.sn()
	msg := append(append(append([]byte{}, key...), chal...), OpMAC, 0, 3, 0)
	msg = append(append(append(msg, make([]byte, 11)...), sn[8]), make([]byte, 4)...)
	msg = append(append(msg, sn[0], sn[1]), 0, 0)
	want := sha256.Sum256(msg)
	if !bytes.Equal(mac, want[:]) {
		t.Fatalf("MAC %x, want %x", mac, want)
	}
	other := []byte{OpMAC, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if st := exec(t, c, OpCheckMac, 0x00, 3, append(append(append([]byte{}, chal...), mac...), other...)); st[0] != StatusOK {
		t.Fatalf("CheckMac of a good MAC: %x", st)
	}
	mac[0] ^= 1
	if st := exec(t, c, OpCheckMac, 0x00, 3, append(append(append([]byte{}, chal...), mac...), other...)); st[0] != StatusMiscompare {
		t.Fatalf("CheckMac of a bad MAC: %x", st)
	}
}

func TestWatchdog(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewBlank(5)
	c.Now = func() time.Time { return now }
	c.Wake()
	if err := c.I2CWrite(cmd(OpInfo, 0, 0, nil)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(1500 * time.Millisecond)
	if _, err := c.I2CRead(make([]byte, 4)); err == nil {
		t.Fatal("chip still awake after the watchdog period")
	}
	c.Wake()
	if _, err := c.I2CRead(make([]byte, 4)); err != nil {
		t.Fatal("chip does not wake after the watchdog")
	}
}
