package labui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/efuse"
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/partition"
	"github.com/spf13/afero"
)

// State is what the lab console shows of a device besides its event
// streams. It never holds key material: key blocks, ATECC slots and
// passwords appear only as "set", "protected" and the like.
type State struct {
	Device DeviceInfo     `json:"device"`
	Efuses *EfuseView     `json:"efuses,omitempty"`
	Flash  FlashView      `json:"flash"`
	Files  []FileInfo     `json:"files"`
	Config []ConfigValue  `json:"config"`
	ATCA   ATCAView       `json:"atca"`
	RAM    RAMView        `json:"ram"`
	Errors map[string]any `json:"errors,omitempty"`
}

// DeviceInfo is the device's identity and where to reach it.
type DeviceInfo struct {
	Name        string `json:"name"`
	ID          string `json:"id"`
	Arch        string `json:"arch"`
	StateDir    string `json:"state_dir"`
	HTTPAddr    string `json:"http_addr"`
	Serial      string `json:"serial"`
	Running     bool   `json:"running"`
	Downloading bool   `json:"downloading"`
	BootError   string `json:"boot_error,omitempty"`
	MQTT        string `json:"mqtt,omitempty"`
}

// EfuseView is every efuse field and block as the chip holds it.
type EfuseView struct {
	FlashEncryption bool         `json:"flash_encryption"`
	Fields          []EfuseField `json:"fields"`
	Blocks          []EfuseBlock `json:"blocks"`
}

// EfuseField is one BLK0 field.
type EfuseField struct {
	Name           string `json:"name"`
	MosName        string `json:"mos_name"`
	Value          string `json:"value"`
	Width          uint   `json:"width"`
	BitsSet        int    `json:"bits_set"`
	WriteProtected bool   `json:"write_protected"`
	ReadProtected  bool   `json:"read_protected"`
}

// EfuseBlock is one key block: its state, never its bits.
type EfuseBlock struct {
	Block          int    `json:"block"`
	Name           string `json:"name"`
	Purpose        string `json:"purpose"`
	State          string `json:"state"` // "blank", "burnt" or "read-protected"
	WriteProtected bool   `json:"write_protected"`
	ReadProtected  bool   `json:"read_protected"`
}

// FlashView is the partition table and a map of the flash by sector.
type FlashView struct {
	Size       int64       `json:"size"`
	SectorSize int         `json:"sector_size"`
	Partitions []Partition `json:"partitions"`
	// Map has one letter per sector: 'e' erased, 'p' plaintext,
	// 'c' ciphertext (by entropy).
	Map     string   `json:"map"`
	Secrets []Secret `json:"secrets"`
}

// Partition is one entry of the partition table.
type Partition struct {
	Label     string `json:"label"`
	Type      string `json:"type"`
	Offset    uint32 `json:"offset"`
	Size      uint32 `json:"size"`
	Encrypted bool   `json:"encrypted"`
}

// Secret is a plaintext secret found in raw flash (what a flash dump
// shows). Only its kind and place are reported, never its bytes.
type Secret struct {
	Sector    int64  `json:"sector"`
	Offset    int64  `json:"offset"`
	Kind      string `json:"kind"`
	Partition string `json:"partition,omitempty"`
	// Public is true for PEM blocks that are meant to be read
	// (certificates, public keys): listed, not counted as secrets.
	Public bool `json:"public,omitempty"`
}

// FileInfo is one entry of the device's filesystem.
type FileInfo struct {
	Path  string `json:"path"`
	Size  int64  `json:"size"`
	IsDir bool   `json:"is_dir,omitempty"`
}

// ConfigValue is one sys_config value and the level it comes from
// (0 = schema default, 1..9 = confN.json).
type ConfigValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	Level int    `json:"level"`
}

// ATCAView is the ATECC608A's configuration: locks and what each slot is
// for. Never slot contents.
type ATCAView struct {
	Serial       string     `json:"serial"`
	ConfigLocked bool       `json:"config_locked"`
	DataLocked   bool       `json:"data_locked"`
	Slots        []ATCASlot `json:"slots"`
}

// ATCASlot is one data slot's configuration.
type ATCASlot struct {
	Slot       int    `json:"slot"`
	SlotConfig string `json:"slot_config"`
	KeyConfig  string `json:"key_config"`
	KeyType    string `json:"key_type"`
	Private    bool   `json:"private"`
	Secret     bool   `json:"secret"`
	Locked     bool   `json:"locked"`
	Written    bool   `json:"written"`
}

// RAMView is the firmware heap as the mbedTLS model charges it.
type RAMView struct {
	Total   int `json:"total"`
	Free    int `json:"free"`
	MinFree int `json:"min_free"`
	// Conns are the connections the device's HTTP server holds; TLS says
	// whether they are TLS connections (the mbedTLS cost).
	Conns int  `json:"conns"`
	TLS   bool `json:"tls"`
}

// Inspect gathers the state of d.
func Inspect(name string, d *emu.Device) State {
	s := State{Errors: map[string]any{}}
	s.Device = DeviceInfo{Name: name, ID: d.DeviceID(), Arch: d.Identity().Arch, StateDir: d.StateDir(),
		HTTPAddr: d.HTTPAddr(), Serial: d.SerialPath(), Running: d.Running(), Downloading: d.Downloading(), MQTT: d.MQTTBroker()}
	if err := d.BootError(); err != nil {
		s.Device.BootError = err.Error()
	}
	if ef := d.Efuses(); ef != nil {
		s.Efuses = inspectEfuses(ef)
	}
	s.Flash = inspectFlash(d.Flash(), d.PartitionTable())
	if fsys := d.FS(); fsys != nil {
		s.Files = inspectFS(fsys)
	}
	levels, err := d.ConfigLevels()
	if err != nil {
		s.Errors["config"] = err.Error()
	} else if levels != nil {
		s.Config = inspectConfig(levels)
	}
	s.ATCA = inspectATCA(d)
	s.RAM.Total, s.RAM.Free, s.RAM.MinFree = d.RAM()
	s.RAM.Conns = d.ServerConns()
	for _, c := range s.Config {
		if c.Key == "http.ssl_cert" && c.Value != `""` {
			s.RAM.TLS = true
		}
	}
	if len(s.Errors) == 0 {
		s.Errors = nil
	}
	return s
}

var blockPurpose = map[int]string{1: "flash encryption key", 2: "secure boot key", 3: "user key"}

func inspectEfuses(ef *efuse.Efuses) *EfuseView {
	v := &EfuseView{FlashEncryption: ef.EncryptionEnabled()}
	wr, _ := ef.Value("WR_DIS")
	rd, _ := ef.Value("RD_DIS")
	for _, f := range efuse.Fields {
		wp := f.WrDisBit >= 0 && wr&(1<<f.WrDisBit) != 0
		rp := f.RdDisBit >= 0 && rd&(1<<f.RdDisBit) != 0
		if f.Block > 0 {
			b := EfuseBlock{Block: f.Block, Name: f.Name, Purpose: blockPurpose[f.Block], WriteProtected: wp, ReadProtected: rp}
			switch {
			case rp:
				b.State = "read-protected"
			case blockBitsSet(ef, f.Block) > 0:
				b.State = "burnt"
			default:
				b.State = "blank"
			}
			v.Blocks = append(v.Blocks, b)
			continue
		}
		val, _ := ef.Value(f.Name)
		digits := max(1, int(f.Width+3)/4)
		v.Fields = append(v.Fields, EfuseField{Name: f.Name, MosName: f.MosName, Value: fmt.Sprintf("0x%0*x", digits, val),
			Width: f.Width, BitsSet: bits.OnesCount64(val), WriteProtected: wp, ReadProtected: rp})
	}
	return v
}

// rdata are the read registers of the key blocks (what software can read:
// zero when the block is read-protected).
var rdata = [4]uint32{0x000, 0x038, 0x058, 0x078}

func blockBitsSet(ef *efuse.Efuses, block int) int {
	n := 0
	for i := uint32(0); i < 8; i++ {
		w, _ := ef.ReadReg(efuse.BaseAPB + rdata[block] + 4*i)
		n += bits.OnesCount32(w)
	}
	return n
}

// Entropy above which a 4 KiB sector counts as ciphertext: AES output has
// about 7.95 bits per byte over 4096 bytes; littlefs metadata, text and
// padding stay far below.
const cipherEntropy = 7.5

var (
	pemHeader = regexp.MustCompile(`-----BEGIN ([A-Z0-9 ]+)-----`)
	// An htdigest line (user:realm:md5), also inside littlefs metadata
	// where small files are stored inline next to binary bytes.
	htdigestRe = regexp.MustCompile(`[A-Za-z0-9_.@-]{1,64}:[A-Za-z0-9_.@ -]{1,64}:[0-9a-f]{32}(?:[^0-9a-f]|$)`)
)

func inspectFlash(chip *flash.Chip, table partition.Table) FlashView {
	v := FlashView{Size: chip.Size(), SectorSize: flash.SectorSize}
	if table == nil { // firmware not running: read the raw table if it is plaintext
		raw := make([]byte, partition.TableSize)
		if _, err := chip.ReadAt(raw, partition.Offset); err == nil {
			table, _ = partition.Parse(raw)
		}
	}
	for _, p := range table {
		typ := "data"
		if p.Type == partition.TypeApp {
			typ = "app"
		}
		v.Partitions = append(v.Partitions, Partition{Label: p.Label, Type: typ, Offset: p.Offset, Size: p.Size, Encrypted: p.Encrypted()})
	}
	m := bytes.Repeat([]byte{'e'}, int(chip.Size()/flash.SectorSize))
	buf := make([]byte, flash.SectorSize)
	for _, s := range chip.UsedSectors() {
		off := s * flash.SectorSize
		if _, err := chip.ReadAt(buf, off); err != nil {
			continue
		}
		class, secrets := ClassifySector(buf)
		m[s] = class
		for _, sec := range secrets {
			sec.Sector, sec.Offset = s, off+sec.Offset
			for _, p := range table {
				if sec.Offset >= int64(p.Offset) && sec.Offset < int64(p.Offset)+int64(p.Size) {
					sec.Partition = p.Label
				}
			}
			v.Secrets = append(v.Secrets, sec)
		}
	}
	v.Map = string(m)
	return v
}

// ClassifySector tells whether a sector of raw flash is erased ('e'),
// plaintext ('p') or ciphertext ('c'), and lists the plaintext secrets in
// it (offsets relative to the sector).
func ClassifySector(b []byte) (byte, []Secret) {
	if bytes.Count(b, []byte{0xFF}) == len(b) {
		return 'e', nil
	}
	if Entropy(b) >= cipherEntropy {
		return 'c', nil
	}
	return 'p', FindSecrets(b)
}

// FindSecrets lists the plaintext secrets in b: PEM private keys and other
// PEM blocks (certificates and public keys marked Public), and htdigest
// lines of an rpc_auth.txt.
func FindSecrets(b []byte) []Secret {
	var out []Secret
	for _, m := range pemHeader.FindAllSubmatchIndex(b, -1) {
		label := string(b[m[2]:m[3]])
		sec := Secret{Offset: int64(m[0]), Kind: "PEM " + strings.ToLower(label)}
		switch {
		case strings.Contains(label, "PRIVATE KEY"):
			sec.Kind = "private key (PEM " + label + ")"
		case strings.Contains(label, "CERTIFICATE") || strings.Contains(label, "PUBLIC KEY"):
			sec.Public = true
		}
		out = append(out, sec)
	}
	for _, m := range htdigestRe.FindAllIndex(b, -1) {
		out = append(out, Secret{Offset: int64(m[0]), Kind: "password hash (rpc_auth.txt line)"})
	}
	return out
}

// Entropy is the Shannon entropy of b in bits per byte.
func Entropy(b []byte) float64 {
	if len(b) == 0 {
		return 0
	}
	var n [256]int
	for _, c := range b {
		n[c]++
	}
	h := 0.0
	for _, c := range n {
		if c > 0 {
			p := float64(c) / float64(len(b))
			h -= p * math.Log2(p)
		}
	}
	return h
}

func inspectFS(fsys afero.Fs) []FileInfo {
	var out []FileInfo
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		infos, err := afero.ReadDir(fsys, dir)
		if err != nil || depth > 8 {
			return
		}
		for _, fi := range infos {
			p := path.Join(dir, fi.Name())
			out = append(out, FileInfo{Path: strings.TrimPrefix(p, "/"), Size: fi.Size(), IsDir: fi.IsDir()})
			if fi.IsDir() {
				walk(p, depth+1)
			}
		}
	}
	walk("/", 0)
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// secretKey reports whether a config key holds a password.
func secretKey(k string) bool {
	last := k[strings.LastIndexByte(k, '.')+1:]
	return last == "pass" || strings.HasSuffix(last, "_pass") || strings.HasSuffix(last, "password") || strings.HasSuffix(last, "psk")
}

func inspectConfig(levels []*configs.Config) []ConfigValue {
	var out []ConfigValue
	var walk func(n *configs.Node)
	walk = func(n *configs.Node) {
		if n.Kind == configs.Object {
			for _, c := range n.Children {
				walk(c)
			}
			return
		}
		render := func(c *configs.Config) string {
			v, _ := c.Value(n.Path)
			b, _ := json.Marshal(v)
			return string(b)
		}
		origin, prev := 0, render(levels[0])
		for i := 1; i < len(levels); i++ {
			if cur := render(levels[i]); cur != prev {
				origin, prev = i, cur
			}
		}
		val := prev
		if secretKey(n.Path) && val != `""` {
			val = "(set, hidden)"
		}
		out = append(out, ConfigValue{Key: n.Path, Value: val, Level: origin})
	}
	walk(levels[len(levels)-1].Schema().Root)
	return out
}

var keyTypes = map[int]string{4: "P256 ECC", 6: "AES", 7: "SHA/other"}

func inspectATCA(d *emu.Device) ATCAView {
	chip := d.ATCA()
	if chip == nil {
		return ATCAView{}
	}
	cfg, written := chip.Inspect()
	v := ATCAView{Serial: fmt.Sprintf("%X%X", cfg[0:4], cfg[8:13]), DataLocked: cfg[86] != 0x55, ConfigLocked: cfg[87] != 0x55}
	slotLocked := uint16(cfg[88]) | uint16(cfg[89])<<8
	for i := 0; i < 16; i++ {
		sc := uint16(cfg[20+2*i]) | uint16(cfg[21+2*i])<<8
		kc := uint16(cfg[96+2*i]) | uint16(cfg[97+2*i])<<8
		kt := keyTypes[int(kc>>2&7)]
		if kt == "" {
			kt = fmt.Sprintf("type %d", kc>>2&7)
		}
		v.Slots = append(v.Slots, ATCASlot{Slot: i, SlotConfig: fmt.Sprintf("%04X", sc), KeyConfig: fmt.Sprintf("%04X", kc),
			KeyType: kt, Private: kc&1 != 0, Secret: sc&0x80 != 0, Locked: slotLocked&(1<<i) == 0, Written: written[i]})
	}
	return v
}
