package efuse

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

func TestMACCRC(t *testing.T) {
	for _, tt := range []struct {
		mac  []byte
		want uint8
	}{
		{[]byte{0x94, 0xb9, 0x7e, 0x5a, 0x6e, 0x58}, 0xe2},
		{[]byte{0x24, 0x0a, 0xc4, 0x00, 0x31, 0xbc}, 0x98},
		{[]byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66}, 0x48},
	} {
		if got := CRC8(tt.mac); got != tt.want {
			t.Errorf("CRC8(%x) = %#x, want %#x", tt.mac, got, tt.want)
		}
	}
	e := Factory(0x0031bc)
	if e.stored[0][1] != 0xc40031bc || e.stored[0][2] != 0x0098240a {
		t.Fatalf("factory MAC words %#x %#x", e.stored[0][1], e.stored[0][2])
	}
}

func TestKeyEncoding(t *testing.T) {
	tests := []struct {
		key   string
		words [8]uint32
	}{
		{"0123456789abcdeff1e2d3c4b5a69788796a5b4c3d2e1f551122334455667788",
			[8]uint32{0x55667788, 0x11223344, 0x3d2e1f55, 0x796a5b4c, 0xb5a69788, 0xf1e2d3c4, 0x89abcdef, 0x01234567}},
		{"e63e5c272ae7e59bc31838258ede071e712bdd3812c0c24c6d2abb4587a299df",
			[8]uint32{0x87a299df, 0x6d2abb45, 0x12c0c24c, 0x712bdd38, 0x8ede071e, 0xc3183825, 0x2ae7e59b, 0xe63e5c27}},
	}
	for _, tt := range tests {
		k, _ := hex.DecodeString(tt.key)
		if got := keyWords([32]byte(k)); got != tt.words {
			t.Errorf("keyWords(%s) = %08x", tt.key, got)
		}
		if back := blockKey(tt.words, false); hex.EncodeToString(back[:]) != tt.key {
			t.Errorf("blockKey round trip = %x", back)
		}
	}
}

// TestRegisterProtocol drives the controller as mos esp32-gen-key does:
// WDATA, CONF=0x5A5A, CMD=2, then CONF=0x5AA5, CMD=1, through the 0x6001A000 alias.
func TestRegisterProtocol(t *testing.T) {
	e := Factory(1)
	key, _ := hex.DecodeString("e63e5c272ae7e59bc31838258ede071e712bdd3812c0c24c6d2abb4587a299df")
	w := keyWords([32]byte(key))
	for i, v := range w {
		e.WriteReg(BaseAHB+0x098+uint32(4*i), v)
	}
	e.WriteReg(BaseAHB+0x01C, 1<<7|1<<2|1<<16|1<<20) // WR_DIS BLK1 + crypt cnt, RD_DIS BLK1, cnt=1
	e.WriteReg(BaseAHB+0x030, 0xF<<28)               // FLASH_CRYPT_CONFIG
	e.WriteReg(BaseAHB+regConf, opPgm)
	e.WriteReg(BaseAHB+regCmd, 2)
	if v, _ := e.ReadReg(BaseAPB + 0x098); v != 0 {
		t.Fatal("WDATA not cleared after the burn")
	}
	if v, _ := e.ReadReg(BaseAPB + 0x038); v != 0 {
		// Before the reload the read registers still show the old BLK1.
		t.Fatalf("BLK1 visible before reload: %#x", v)
	}
	e.WriteReg(BaseAPB+regConf, opRead)
	e.WriteReg(BaseAPB+regCmd, 1)
	if v, _ := e.ReadReg(BaseAPB + 0x038); v != 0 {
		t.Fatalf("read-protected BLK1 reads %#x", v)
	}
	if !e.EncryptionEnabled() || e.FlashCryptConfig() != 0xF || e.FlashEncryptionKey() != [32]byte(key) {
		t.Fatal("engine view of the efuses is wrong")
	}
	// Write protection: further burns of FLASH_CRYPT_CNT and BLK1 are ignored.
	e.WriteReg(BaseAPB+0x01C, 1<<21)
	e.WriteReg(BaseAPB+0x098, 0xFFFFFFFF)
	e.WriteReg(BaseAPB+regConf, opPgm)
	e.WriteReg(BaseAPB+regCmd, 2)
	if e.FlashCryptCnt() != 1 || e.stored[1][0] != w[0] {
		t.Fatalf("write-protected bits changed: cnt %#x blk1 %#x", e.FlashCryptCnt(), e.stored[1][0])
	}
	if v, _ := e.ReadReg(BaseAPB + regDate); v != 0x16042600 {
		t.Fatalf("DATE = %#x", v)
	}
	if _, ok := e.ReadReg(0x3FF40014); ok {
		t.Fatal("UART register claimed by the efuse controller")
	}
}

func TestBurnRules(t *testing.T) {
	tests := []struct {
		name  string
		run   func(e *Efuses) error
		valid bool
	}{
		{"set a bit", func(e *Efuses) error { return e.Burn("JTAG_disable", 1) }, true},
		{"too wide", func(e *Efuses) error { return e.Burn("flash_crypt_config", 0x1F) }, false},
		{"clear a bit", func(e *Efuses) error { e.Burn("flash_crypt_config", 0xF); return e.Burn("flash_crypt_config", 0x3) }, false},
		{"write protected", func(e *Efuses) error { e.Protect(1<<14, 0); return e.Burn("JTAG_DISABLE", 1) }, false},
		{"unknown", func(e *Efuses) error { return e.Burn("nope", 1) }, false},
		{"enable encryption", func(e *Efuses) error {
			if err := e.GenerateKeyIfUnset(); err != nil {
				return err
			}
			if err := e.EnableFlashEncryption(); err != nil {
				return err
			}
			if !e.EncryptionEnabled() {
				t.Error("not enabled")
			}
			return nil
		}, true},
	}
	for _, tt := range tests {
		if err := tt.run(Factory(2)); (err == nil) != tt.valid {
			t.Errorf("%s: err %v", tt.name, err)
		}
	}
}

func TestFileRoundTripAndDump(t *testing.T) {
	e := Factory(0xA1B2C3)
	e.Burn("flash_crypt_config", 0xF)
	e.BurnKey(1, [32]byte{1, 2, 3})
	e.Protect(1<<7, 1<<0)
	path := filepath.Join(t.TempDir(), "efuse.bin")
	if err := e.Save(path); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != FileSize {
		t.Fatalf("file size %d", st.Size())
	}
	e2, err := Load(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	e.Dump(&a)
	e2.Dump(&b)
	if a.String() != b.String() {
		t.Fatal("dump differs after reload")
	}
	golden := "testdata/dump.txt"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.WriteFile(golden, a.Bytes(), 0o644)
	}
	want, _ := os.ReadFile(golden)
	if a.String() != string(want) {
		t.Fatalf("dump:\n%s\nwant:\n%s", a.String(), want)
	}
}

func FuzzParse(f *testing.F) {
	b, _ := Factory(3).MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		if err != nil {
			return
		}
		e.Dump(&bytes.Buffer{})
		e.FlashEncryptionKey()
		out, _ := e.MarshalBinary()
		if !bytes.Equal(out, b) {
			t.Fatal("round trip differs")
		}
	})
}
