package romloader

import (
	"bytes"
	"compress/zlib"
	"crypto/md5"
	"encoding/binary"
	"testing"
)

// stubSession uploads a stub the way mos does (params block, data, code
// right after the params, MEM_END with the entry) and returns the loader
// and its output, past the stub's first frame.
func stubSession(t *testing.T) (*Loader, *bytes.Buffer, *fakeChip) {
	l, out, c := newLoader(true)
	for _, seg := range []struct {
		addr  uint32
		data  []byte
		entry uint32
	}{
		{0x40090000, words(115200, 921600), 0},
		{0x3ffdf030, make([]byte, 60), 0},
		{0x40090008, make([]byte, 4308), 0x40091040},
	} {
		l.Feed(request(CmdMemBegin, words(uint32(len(seg.data)), 1, 0x1000, seg.addr), 0))
		l.Feed(request(CmdMemData, append(words(uint32(len(seg.data)), 0, 0, 0), seg.data...), checksum(seg.data)))
		flag := uint32(1)
		if seg.entry != 0 {
			flag = 0
		}
		l.Feed(request(CmdMemEnd, words(flag, seg.entry), 0))
	}
	fr := responses(out.Bytes())
	if l.stub == nil || len(fr) != 10 || len(fr[9]) != 4 {
		t.Fatalf("stub not started: %d frames", len(fr))
	}
	out.Reset()
	return l, out, c
}

func TestMosStubProtocol(t *testing.T) {
	l, out, c := stubSession(t)
	// Sync: empty frame, ECHO with a cookie.
	l.Feed([]byte{0xC0, 0xC0})
	l.Feed(Encode([]byte{stubEcho}))
	l.Feed(Encode(words(0xCAFEF00D)))
	if fr := responses(out.Bytes()); len(fr) != 2 || !bytes.Equal(fr[0], words(0xCAFEF00D)) || !bytes.Equal(fr[1], []byte{0}) {
		t.Fatalf("echo: %x", fr)
	}
	out.Reset()
	l.Feed(Encode([]byte{stubReadChipID}))
	if fr := responses(out.Bytes()); len(fr) != 2 || fr[0][2] != 22 {
		t.Fatalf("chip id: %x", fr)
	}
	// FLASH_WRITE of 3 sectors: one compressed, one empty, one plain.
	data := append(bytes.Repeat([]byte("abcd"), 1024), bytes.Repeat([]byte{0xFF}, 4096)...)
	plain := make([]byte, 4096)
	for i := range plain {
		plain[i] = byte(i * 7)
	}
	data = append(data, plain...)
	out.Reset()
	l.Feed(Encode([]byte{stubFlashWrite}))
	l.Feed(Encode(words(0x100000, uint32(len(data)), 1)))
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, 9)
	zw.Write(data[:4096])
	zw.Close()
	l.Feed(Encode(append([]byte{flagCompressed}, z.Bytes()...)))
	l.Feed(Encode([]byte{flagEmpty}))
	l.Feed(Encode(append([]byte{0}, plain...)))
	fr := responses(out.Bytes())
	if len(fr) != 6 { // 4 progress, result, status
		t.Fatalf("write: %d frames", len(fr))
	}
	if n := binary.LittleEndian.Uint32(fr[2][0:]); n != 8192 {
		t.Fatalf("progress after 2 blocks: %d", n)
	}
	sum := md5.Sum(data)
	if !bytes.Equal(fr[4][20:], sum[:]) || !bytes.Equal(fr[5], []byte{0}) {
		t.Fatalf("write result %x", fr[4])
	}
	got := make([]byte, len(data))
	c.fl.ReadAt(got, 0x100000)
	if !bytes.Equal(got, data) {
		t.Fatal("flash content differs")
	}
	// FLASH_READ with acks, then FLASH_DIGEST.
	out.Reset()
	l.Feed(Encode([]byte{stubFlashRead}))
	l.Feed(Encode(words(0x100000, 2500, 1024)))
	var read []byte
	for len(read) < 2500 {
		fr := responses(out.Bytes())
		out.Reset()
		if len(fr) != 1 {
			t.Fatalf("read: expected one block, got %d frames", len(fr))
		}
		read = append(read, fr[0]...)
		l.Feed(Encode(words(uint32(len(read)))))
	}
	fr = responses(out.Bytes())
	s2 := md5.Sum(data[:2500])
	if !bytes.Equal(read, data[:2500]) || len(fr) != 2 || !bytes.Equal(fr[0], s2[:]) {
		t.Fatalf("read back differs or bad digest %x", fr)
	}
	out.Reset()
	l.Feed(Encode([]byte{stubFlashDigest}))
	l.Feed(Encode(words(0x100000, uint32(len(data)), 4096)))
	if fr := responses(out.Bytes()); len(fr) != 5 || !bytes.Equal(fr[3], sum[:]) {
		t.Fatalf("digest: %d frames", len(fr))
	}
	// Errors: misaligned write, unknown command; then BOOT_FW ends the session.
	out.Reset()
	l.Feed(Encode([]byte{stubFlashWrite}))
	l.Feed(Encode(words(0x100001, 4096, 1)))
	l.Feed(Encode([]byte{0x42}))
	if fr := responses(out.Bytes()); len(fr) != 2 || fr[0][0] != 0x32 || fr[1][0] != 0xFF {
		t.Fatalf("errors: %x", fr)
	}
	if ex, done := l.Feed(Encode([]byte{stubBootFW})); !done || ex != ExitRunUserCode {
		t.Fatal("BOOT_FW did not end the session")
	}
}
