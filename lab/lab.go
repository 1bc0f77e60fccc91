// Package lab describes workshop labs in YAML: the device a student starts
// from and the goals that grade the student's fix, each a check against the
// device (an RPC call and its expected outcome, a flash range without
// plaintext secrets, an efuse value, a config value, a file, a TLS
// handshake, RAM left after a connection flood).
package lab

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Lab is one exercise.
type Lab struct {
	Title       string `yaml:"title"`
	Description string `yaml:"description"`
	// Solution documents the fix (shown by `mosemu lab show`).
	Solution string `yaml:"solution"`
	Device   Device `yaml:"device"`
	Goals    []Goal `yaml:"goals"`

	dir string // of the lab file, for relative paths
}

// Device is the starting device.
type Device struct {
	Arch string `yaml:"arch"` // esp32 (default) or esp8266
	Seed uint64 `yaml:"seed"` // per-unit values; 0 picks one
	// Config is written to conf9.json (nested keys, as mos config-set leaves them).
	Config map[string]any `yaml:"config"`
	// Files are written to the device filesystem (name -> content).
	Files map[string]string `yaml:"files"`
	// PKI writes a fresh CA and server and client certificates and keys:
	// ca.pem, cert.pem, key.pem, client.pem, client.key.pem.
	PKI bool `yaml:"pki"`
	// ATCA provisions the ATECC608A (factory blank without it).
	ATCA *ATCA `yaml:"atca"`
	// Efuses are burned (espefuse field names, BLK0 only).
	Efuses map[string]uint64 `yaml:"efuses"`
	// Run flags the device needs (mosemu run --tls-latency, --mbedtls-dynamic-buffers).
	TLSLatency            bool `yaml:"tls_latency"`
	MbedTLSDynamicBuffers bool `yaml:"mbedtls_dynamic_buffers"`
}

// ATCA is the starting state of the ATECC608A.
type ATCA struct {
	// Config is a configuration zone in mos's YAML format (as
	// mos atca-get-config prints it), relative to the lab file.
	Config     string `yaml:"config"`
	LockConfig bool   `yaml:"lock_config"`
	LockData   bool   `yaml:"lock_data"`
	// GenKey lists slots that get a fresh private key (after the locks).
	GenKey []int `yaml:"genkey"`
}

// Goal is one check. Exactly one of the check fields is set.
type Goal struct {
	Name   string      `yaml:"name"`
	RPC    *RPCGoal    `yaml:"rpc"`
	Flash  *FlashGoal  `yaml:"flash"`
	Efuse  *EfuseGoal  `yaml:"efuse"`
	Config *ConfigGoal `yaml:"config"`
	File   *FileGoal   `yaml:"file"`
	TLS    *TLSGoal    `yaml:"tls"`
	RAM    *RAMGoal    `yaml:"ram"`

	line int
}

// RPCGoal calls a method and expects an outcome: "ok", "refused" (401 or
// 403), or a code such as "401".
type RPCGoal struct {
	Method  string         `yaml:"method"`
	Params  map[string]any `yaml:"params"`
	Channel string         `yaml:"channel"` // ws (default) or http
	User    string         `yaml:"user"`
	Pass    string         `yaml:"pass"`
	Expect  string         `yaml:"expect"`
}

// FlashGoal requires a raw flash range (as a flash dump shows it) to hold
// no plaintext secret. Partition names a partition instead of a range.
type FlashGoal struct {
	Partition string `yaml:"partition"`
	Start     int64  `yaml:"start"`
	Length    int64  `yaml:"length"`
}

// EfuseGoal requires a BLK0 field to equal a value, or to have an odd
// number of bits set (FLASH_CRYPT_CNT: flash encryption on).
type EfuseGoal struct {
	Field  string  `yaml:"field"`
	Equals *uint64 `yaml:"equals"`
	Odd    bool    `yaml:"odd"`
}

// ConfigGoal requires a sys_config value (compared as text).
type ConfigGoal struct {
	Key    string `yaml:"key"`
	Equals string `yaml:"equals"`
}

// FileGoal requires a file to exist or not.
type FileGoal struct {
	Path   string `yaml:"path"`
	Absent bool   `yaml:"absent"`
}

// TLSGoal checks the device's HTTPS server: the handshake must succeed
// (without a client certificate unless RequireClientCert), must be refused
// without a client certificate and succeed with client.pem/client.key.pem
// (RequireClientCert), and its key must be the ATECC608A's slot KeySlot
// when KeySlot is set.
type TLSGoal struct {
	RequireClientCert bool `yaml:"require_client_cert"`
	KeySlot           *int `yaml:"key_slot"`
}

// RAMGoal opens Connections connections to the device's HTTP port, holds
// them, and requires at least MinFree bytes of heap left.
type RAMGoal struct {
	Connections int  `yaml:"connections"`
	TLS         bool `yaml:"tls"`
	MinFree     int  `yaml:"min_free"`
}

// Error is a lab file error with its place.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *Error) Error() string {
	s := e.File
	if e.Line > 0 {
		s += fmt.Sprintf(":%d", e.Line)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	return s + ": " + e.Msg
}

// Load reads and validates a lab file.
func Load(path string) (*Lab, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l, err := Parse(path, b)
	if err != nil {
		return nil, err
	}
	l.dir = filepath.Dir(path)
	return l, nil
}

// Parse decodes a lab; name is used in errors.
func Parse(name string, b []byte) (*Lab, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, yamlError(name, err)
	}
	if len(root.Content) == 0 {
		return nil, &Error{File: name, Msg: "empty lab file"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var l Lab
	if err := dec.Decode(&l); err != nil {
		return nil, yamlError(name, err)
	}
	// Goal lines, for validation errors.
	doc := root.Content[0]
	var goalsNode *yaml.Node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == "goals" {
			goalsNode = doc.Content[i+1]
		}
	}
	if goalsNode != nil {
		for i := range l.Goals {
			if i < len(goalsNode.Content) {
				l.Goals[i].line = goalsNode.Content[i].Line
			}
		}
	}
	if err := l.validate(name, doc); err != nil {
		var le *Error
		if errors.As(err, &le) && le.Field != "" {
			if line := lineOf(doc, le.Field); line > 0 {
				le.Line = line
			}
		}
		return nil, err
	}
	return &l, nil
}

// lineOf finds the line of a field path such as "goals[1].rpc.expect" in
// a YAML document: the deepest node of the path that exists.
func lineOf(doc *yaml.Node, path string) int {
	n, line := doc, doc.Line
	for _, part := range strings.Split(path, ".") {
		if part == "" {
			continue
		}
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			key = part[:i]
			fmt.Sscanf(part[i:], "[%d]", &idx)
		}
		next := (*yaml.Node)(nil)
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					line, next = n.Content[i].Line, n.Content[i+1]
				}
			}
		}
		if next == nil {
			return line
		}
		if idx >= 0 {
			if next.Kind != yaml.SequenceNode || idx >= len(next.Content) {
				return line
			}
			next = next.Content[idx]
			line = next.Line
		}
		n = next
	}
	return line
}

// yamlError turns a yaml error ("yaml: line 3: ..." or unmarshal errors
// listing "line 7: field x not found in type lab.Goal") into an Error.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg := te.Errors[0]
		line := 0
		fmt.Sscanf(msg, "line %d:", &line)
		if i := strings.Index(msg, ": "); i >= 0 && line > 0 {
			msg = msg[i+2:]
		}
		field := ""
		if strings.HasPrefix(msg, "field ") {
			field = strings.Fields(msg)[1]
			msg = "unknown field" + strings.TrimPrefix(msg, "field "+field+" not found")
		}
		return &Error{File: name, Line: line, Field: field, Msg: msg}
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	return &Error{File: name, Line: line, Msg: msg}
}

func (l *Lab) validate(name string, doc *yaml.Node) error {
	if strings.TrimSpace(l.Title) == "" {
		return &Error{File: name, Line: doc.Line, Field: "title", Msg: "a lab needs a title"}
	}
	switch l.Device.Arch {
	case "", "esp32", "esp8266":
	default:
		return &Error{File: name, Field: "device.arch", Msg: fmt.Sprintf("unknown arch %q (esp32 or esp8266)", l.Device.Arch)}
	}
	if a := l.Device.ATCA; a != nil {
		for _, s := range a.GenKey {
			if s < 0 || s > 15 {
				return &Error{File: name, Field: "device.atca.genkey", Msg: fmt.Sprintf("slot %d: slots are 0..15", s)}
			}
		}
		if a.LockData && !a.LockConfig {
			return &Error{File: name, Field: "device.atca.lock_data", Msg: "the data zone can only be locked after the config zone (lock_config: true)"}
		}
	}
	if len(l.Goals) == 0 {
		return &Error{File: name, Field: "goals", Msg: "a lab needs at least one goal"}
	}
	for i, g := range l.Goals {
		bad := func(field, msg string) error {
			return &Error{File: name, Line: g.line, Field: fmt.Sprintf("goals[%d].%s", i, field), Msg: msg}
		}
		n := 0
		for _, set := range []bool{g.RPC != nil, g.Flash != nil, g.Efuse != nil, g.Config != nil, g.File != nil, g.TLS != nil, g.RAM != nil} {
			if set {
				n++
			}
		}
		if g.Name == "" {
			return bad("name", "every goal needs a name")
		}
		if n != 1 {
			return bad("", fmt.Sprintf("a goal has exactly one check (rpc, flash, efuse, config, file, tls or ram), this one has %d", n))
		}
		switch {
		case g.RPC != nil:
			if g.RPC.Method == "" {
				return bad("rpc.method", "missing")
			}
			if g.RPC.Channel != "" && g.RPC.Channel != "ws" && g.RPC.Channel != "http" {
				return bad("rpc.channel", fmt.Sprintf("%q: use ws or http", g.RPC.Channel))
			}
			switch e := g.RPC.Expect; {
			case e == "ok" || e == "refused":
			case len(e) == 3 && e[0] >= '1' && e[0] <= '5':
			default:
				return bad("rpc.expect", fmt.Sprintf("%q: use ok, refused or an error code such as 401", e))
			}
		case g.Flash != nil:
			if g.Flash.Partition == "" && g.Flash.Length <= 0 {
				return bad("flash", "name a partition, or a start and a positive length")
			}
		case g.Efuse != nil:
			if g.Efuse.Field == "" || (g.Efuse.Equals == nil && !g.Efuse.Odd) {
				return bad("efuse", "needs a field and equals or odd: true")
			}
		case g.Config != nil:
			if g.Config.Key == "" {
				return bad("config.key", "missing")
			}
		case g.File != nil:
			if g.File.Path == "" {
				return bad("file.path", "missing")
			}
		case g.RAM != nil:
			if g.RAM.Connections <= 0 || g.RAM.Connections > 64 {
				return bad("ram.connections", "must be 1..64")
			}
		}
	}
	return nil
}

func pemBlock(typ string, b []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})
}
