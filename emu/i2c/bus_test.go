package i2c

import (
	"errors"
	"testing"
)

type echo struct{ last []byte }

func (e *echo) I2CWrite(p []byte) error { e.last = append([]byte(nil), p...); return nil }
func (e *echo) I2CRead(p []byte) (int, error) {
	if e.last == nil {
		return 0, ErrNACK
	}
	return copy(p, e.last), nil
}

func TestBus(t *testing.T) {
	b := NewBus()
	if err := b.Attach(0x60, &echo{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"nobody at 0x61", func() error { return b.Write(0x61, []byte{1}) }, ErrNACK},
		{"target NACK", func() error { _, err := b.Read(0x60, make([]byte, 1)); return err }, ErrNACK},
		{"write", func() error { return b.Write(0x60, []byte{7, 8}) }, nil},
		{"read back", func() error {
			p := make([]byte, 2)
			if n, err := b.Read(0x60, p); err != nil || n != 2 || p[1] != 8 {
				return errors.New("bad read")
			}
			return nil
		}, nil},
		{"duplicate address", func() error { return b.Attach(0x60, &echo{}) }, nil},
	}
	for _, tt := range tests {
		err := tt.run()
		if tt.name == "duplicate address" {
			if err == nil {
				t.Errorf("%s: no error", tt.name)
			}
			continue
		}
		if !errors.Is(err, tt.want) && !(err == nil && tt.want == nil) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
}
