package mqtt

import (
	"strings"
	"testing"
	"time"
)

func TestValidSrc(t *testing.T) {
	tests := []struct {
		src  string
		want bool
	}{
		{"esp32_A1B2C3/rpc-resp/mos-1", true},
		{"my/device", true},
		{"", false},
		{"#", false},
		{"+", false},
		{"a/#", false},
		{"a/+/b", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"bad\xff", false},
		{strings.Repeat("x", 65531), true},
		{strings.Repeat("x", 65532), false}, // with "/rpc" over the 16-bit topic length
	}
	for _, tt := range tests {
		if got := ValidSrc(tt.src); got != tt.want {
			t.Errorf("ValidSrc(%.20q) = %v, want %v", tt.src, got, tt.want)
		}
	}
}

func TestClamp(t *testing.T) {
	c := Config{KeepAlive: -time.Second, ReconnectMin: 0, ReconnectMax: -1}
	c.clamp()
	if c.KeepAlive != 0 || c.ReconnectMin != MinReconnect || c.ReconnectMax != MinReconnect {
		t.Fatalf("%+v", c)
	}
	c = Config{KeepAlive: 1 << 62, ReconnectMin: time.Second, ReconnectMax: time.Minute}
	c.clamp()
	if c.KeepAlive != MaxKeepAlive || c.ReconnectMin != time.Second || c.ReconnectMax != time.Minute {
		t.Fatalf("%+v", c)
	}
}
