package console

import (
	"bytes"
	"testing"
)

func TestFormat(t *testing.T) {
	tests := []struct{ src, msg, want string }{
		{"mg_rpc.c:312", "Sys.GetInfo via WS_in 127.0.0.1:5000", "mg_rpc.c:312            Sys.GetInfo via WS_in 127.0.0.1:5000\n"},
		{"a_very_long_source_file_name.c:1234", "x", "a_very_long_source_file\x20x\n"},
		{"", "hi", "                        hi\n"},
	}
	for _, tt := range tests {
		if got := string(Format(tt.src, tt.msg)); got != tt.want {
			t.Errorf("Format(%q,%q) = %q, want %q", tt.src, tt.msg, got, tt.want)
		}
	}
}

func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	out := NewOutput(&WriterSink{W: &buf})
	log := NewLogger(out)
	log.Debug("hidden", Src("x.c", 1))
	log.Info("shown", Src("mgos_init.c", 42))
	out.SetLevel(3)
	log.Debug("now shown", Src("x.c", 2), "k", 1)
	want := "mgos_init.c:42          shown\nx.c:2                   now shown k=1\n"
	if buf.String() != want {
		t.Fatalf("got %q want %q", buf.String(), want)
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Sys.GetInfo", "Sys.GetInfo"},
		{"X\nmg_rpc.c:1 finding=denied", `X\nmg_rpc.c:1 finding=denied`},
		{"a\x1b[2Jb", `a\x1b[2Jb`},
		{"tab\there\r", `tab\there\r`},
		{"c1\u009bx", `c1\u009bx`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"ünïcode ✓", "ünïcode ✓"},
	}
	for _, tt := range tests {
		if got := Sanitize(tt.in); got != tt.want {
			t.Errorf("Sanitize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
