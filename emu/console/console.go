// Package console formats the device's log as Mongoose OS firmware prints it
// on its UART: a 24-byte "file.c:line" prefix, the message, '\n'.
package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Firmware log levels (cs_log_level) as slog levels.
const (
	LevelError   = slog.LevelError // 0
	LevelWarn    = slog.LevelWarn  // 1
	LevelInfo    = slog.LevelInfo  // 2
	LevelDebug   = slog.LevelDebug // 3
	LevelVerbose = slog.Level(-8)  // 4
)

// SrcKey is the attribute that names the firmware source location of a log
// call ("mg_rpc.c:312"); without it the Go caller's file:line is used.
const SrcKey = "src"

// PrefixLen is the width of the source prefix (CS_LOG_PREFIX_LEN).
const PrefixLen = 24

// FromFirmwareLevel converts debug.level (0 error .. 4 verbose) to slog.
func FromFirmwareLevel(l int) slog.Level {
	switch {
	case l <= 0:
		return LevelError
	case l == 1:
		return LevelWarn
	case l == 2:
		return LevelInfo
	case l == 3:
		return LevelDebug
	default:
		return LevelVerbose
	}
}

// Sink receives formatted log lines. The UART implements it so that lines
// never interleave with RPC frames.
type Sink interface {
	WriteLog(line []byte)
}

// LevelSink is a Sink that also wants each line's level (lines printed
// with Print, such as the boot ROM's, have none and arrive via WriteLog).
type LevelSink interface {
	Sink
	WriteLogLevel(l slog.Level, line []byte)
}

// Output fans log lines out to a set of sinks and filters them by level.
// Safe for concurrent use.
type Output struct {
	level atomic.Int64
	mu    sync.Mutex
	sinks []Sink
}

// NewOutput returns an Output at firmware level 2 (info).
func NewOutput(sinks ...Sink) *Output {
	o := &Output{sinks: sinks}
	o.SetLevel(2)
	return o
}

// SetLevel sets the firmware debug level (debug.level, Sys.SetDebug).
func (o *Output) SetLevel(l int) { o.level.Store(int64(FromFirmwareLevel(l))) }

// AddSink adds a destination for log lines.
func (o *Output) AddSink(s Sink) {
	o.mu.Lock()
	o.sinks = append(o.sinks, s)
	o.mu.Unlock()
}

// Enabled reports whether lines at l are printed.
func (o *Output) Enabled(l slog.Level) bool { return l >= slog.Level(o.level.Load()) }

// Print writes one line with the given source prefix, unfiltered.
func (o *Output) Print(src, msg string) {
	line := Format(src, msg)
	o.mu.Lock()
	sinks := o.sinks
	o.mu.Unlock()
	for _, s := range sinks {
		s.WriteLog(line)
	}
}

// PrintLevel writes one line logged at level l (already filtered).
func (o *Output) PrintLevel(l slog.Level, src, msg string) {
	line := Format(src, msg)
	o.mu.Lock()
	sinks := o.sinks
	o.mu.Unlock()
	for _, s := range sinks {
		if ls, ok := s.(LevelSink); ok {
			ls.WriteLogLevel(l, line)
		} else {
			s.WriteLog(line)
		}
	}
}

// Raw writes text exactly as given, unfiltered: what runs before the
// firmware's logger (the boot ROM, the 2nd-stage bootloader) prints.
func (o *Output) Raw(text string) {
	o.mu.Lock()
	sinks := o.sinks
	o.mu.Unlock()
	for _, s := range sinks {
		s.WriteLog([]byte(text))
	}
}

// Format renders one firmware log line.
func Format(src, msg string) []byte {
	if src == "" && msg == "" {
		return []byte{'\n'}
	}
	if len(src) > PrefixLen-1 {
		src = src[:PrefixLen-1]
	}
	b := make([]byte, 0, PrefixLen+len(msg)+1)
	b = append(b, src...)
	for len(b) < PrefixLen {
		b = append(b, ' ')
	}
	b = append(b, msg...)
	return append(b, '\n')
}

// Handler is a slog.Handler writing to an Output.
type Handler struct {
	out   *Output
	attrs []slog.Attr
	group string
}

// NewLogger returns a logger printing firmware-format lines to out.
func NewLogger(out *Output) *slog.Logger { return slog.New(&Handler{out: out}) }

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return h.out.Enabled(l) }

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	src := ""
	var extra strings.Builder
	add := func(a slog.Attr) bool {
		if a.Key == SrcKey {
			src = a.Value.String()
			return true
		}
		if a.Equal(slog.Attr{}) {
			return true
		}
		extra.WriteByte(' ')
		if h.group != "" {
			extra.WriteString(h.group + ".")
		}
		extra.WriteString(Sanitize(a.Key) + "=" + Sanitize(a.Value.String()))
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if src == "" && r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		src = filepath.Base(f.File) + ":" + strconv.Itoa(f.Line)
	}
	h.out.PrintLevel(r.Level, Sanitize(src), Sanitize(r.Message)+extra.String())
	return nil
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &h2
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	h2 := *h
	h2.group = name
	return &h2
}

// WriterSink writes lines to an io.Writer (stderr, a file).
type WriterSink struct {
	mu sync.Mutex
	W  io.Writer
}

// WriteLog implements Sink.
func (s *WriterSink) WriteLog(line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.W.Write(line)
}

// Sanitize makes a peer-supplied string safe to print on one log line:
// control characters (newlines that would forge log lines, ESC sequences
// that would reach the terminal), C1 controls and invalid UTF-8 are
// escaped as \n, \r, \t, \xNN or \u00NN; everything else is kept.
func Sanitize(s string) string {
	clean := true
	for _, r := range s {
		if r < 0x20 || (r >= 0x7F && r <= 0x9F) || r == utf8.RuneError {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7F:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9F:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Src returns the slog attribute naming a firmware source location.
func Src(file string, line int) slog.Attr {
	return slog.String(SrcKey, fmt.Sprintf("%s:%d", file, line))
}
