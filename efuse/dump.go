package efuse

import (
	"encoding/hex"
	"fmt"
	"io"
)

// Dump prints every field in the format of `mos esp32-efuse-get`: the
// name padded to 21 characters, then the value as the read registers show
// it, " (RD)" for a read-protected field and " (WD)" for a write-protected
// one.
func (e *Efuses) Dump(w io.Writer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rd, wr := e.rdDis(), e.wrDis()
	scheme := e.visible[0][6] & 3
	for _, f := range Fields {
		line := fmt.Sprintf("%-21s:", f.MosName)
		switch {
		case f.RdDisBit >= 0 && rd&(1<<f.RdDisBit) != 0:
			line += " (RD)"
		case f.Block > 0:
			k := blockKey(e.visible[f.Block], false)
			line += " " + hex.EncodeToString(k[:])
			if scheme == 1 {
				line += " (scheme: 3/4)"
			}
		case f.Width == 56:
			v := e.field(f, &e.visible)
			w1, w2 := e.visible[0][1], e.visible[0][2]
			line += fmt.Sprintf(" 0x%014x (MAC: %02x:%02x:%02x:%02x:%02x:%02x)", v,
				byte(w2>>8), byte(w2), byte(w1>>24), byte(w1>>16), byte(w1>>8), byte(w1))
		default:
			digits := max(1, int(f.Width)/4)
			line += fmt.Sprintf(" 0x%0*x", digits, e.field(f, &e.visible))
		}
		if f.WrDisBit >= 0 && wr&(1<<f.WrDisBit) != 0 {
			line += " (WD)"
		}
		fmt.Fprintln(w, line)
	}
}
