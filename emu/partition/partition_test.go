package partition

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

func TestRoundTripAndGolden(t *testing.T) {
	b, err := DefaultESP32().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != SectorSize {
		t.Fatalf("len %d", len(b))
	}
	golden := "testdata/esp32-default.bin"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.WriteFile(golden, b[:256], 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:256], want) {
		t.Fatalf("marshal differs from %s", golden)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != DefaultESP32().String() {
		t.Fatalf("round trip:\n%s\nwant\n%s", got, DefaultESP32())
	}
	fs, ok := got.RootFS()
	if !ok || fs.Offset != 0x190000 || fs.Size != 0x40000 || !fs.Encrypted() {
		t.Fatalf("root fs %+v", fs)
	}
}

func TestParseErrors(t *testing.T) {
	good, _ := DefaultESP32().Marshal()
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	overlap := DefaultESP32()
	overlap[1].Offset = 0x9100
	ob, _ := overlap.Marshal()
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"blank", bytes.Repeat([]byte{0xFF}, SectorSize), ErrEmpty},
		{"md5 mismatch", flip(4), ErrBadMD5},
		{"bad magic", flip(32), ErrCorrupt},
		{"overlap", ob, ErrCorrupt},
		{"truncated", good[:10], ErrEmpty},
	}
	for _, tt := range tests {
		if _, err := Parse(tt.in); !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	good, _ := DefaultESP32().Marshal()
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := Parse(b)
		if err != nil {
			return
		}
		if _, err := tab.Marshal(); err != nil && len(tab) < 90 {
			t.Fatalf("parsed table does not marshal: %v", err)
		}
	})
}
