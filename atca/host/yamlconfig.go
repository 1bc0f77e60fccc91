package host

import (
	"encoding/binary"
	"fmt"

	"gopkg.in/yaml.v3"
)

// mosConfig is the YAML form of the configuration zone used by
// `mos atca-get-config --format=yaml` and `mos atca-set-config`.
type mosConfig struct {
	SerialNum  []byte `yaml:"serialnum"`
	Revision   uint32 `yaml:"revision"`
	Reserved13 byte   `yaml:"reserved13"`
	I2CEnable  bool   `yaml:"i2cenable"`
	Reserved15 byte   `yaml:"reserved15"`
	I2CAddress byte   `yaml:"i2caddress"`
	Reserved17 byte   `yaml:"reserved17"`
	OTPMode    byte   `yaml:"otpmode"`
	ChipMode   struct {
		SelectorWriteOnce bool   `yaml:"selectorwriteonce"`
		TTLEnable         bool   `yaml:"ttlenable"`
		WatchdogDuration  string `yaml:"watchdogduration"`
	} `yaml:"chipmode"`
	SlotInfo []struct {
		Num        int `yaml:"num"`
		SlotConfig struct {
			PrivateKeySlotConfig *struct {
				ExtSignEnable, IntSignEnable, ECDHEnable, ECDHToNextSlot bool
			} `yaml:"privatekeyslotconfig"`
			ReadKey     byte `yaml:"readkey"`
			NoMAC       bool `yaml:"nomac"`
			LimitedUse  bool `yaml:"limiteduse"`
			EncryptRead bool `yaml:"encryptread"`
			IsSecret    bool `yaml:"issecret"`
			WriteKey    byte `yaml:"writekey"`
			WriteConfig byte `yaml:"writeconfig"`
		} `yaml:"slotconfig"`
		KeyConfig struct {
			Private, PubInfo bool
			KeyType          string `yaml:"keytype"`
			Lockable         bool
			ReqRandom        bool `yaml:"reqrandom"`
			ReqAuth          bool `yaml:"reqauth"`
			AuthKey          byte `yaml:"authkey"`
			IntrusionDisable bool `yaml:"intrusiondisable"`
			X509ID           byte `yaml:"x509id"`
		} `yaml:"keyconfig"`
	} `yaml:"slotinfo"`
	Counter0    uint64 `yaml:"counter0"`
	Counter1    uint64 `yaml:"counter1"`
	LastKeyUse0 uint64 `yaml:"lastkeyuse0"`
	LastKeyUse1 uint64 `yaml:"lastkeyuse1"`
	UserExtra   byte   `yaml:"userextra"`
	Selector    byte   `yaml:"selector"`
	LockValue   string `yaml:"lockvalue"`
	LockConfig  string `yaml:"lockconfig"`
	SlotLocked  uint16 `yaml:"slotlocked"`
	Reserved90  byte   `yaml:"reserved90"`
	Reserved91  byte   `yaml:"reserved91"`
	X509Format  []struct {
		PublicPosition byte `yaml:"publicposition"`
		TemplateLength byte `yaml:"templatelength"`
	} `yaml:"x509format"`
}

var keyTypes = map[string]uint16{"ECC": 4, "AES": 6, "Other": 7, "NonECC": 7}

func lockByte(s string) (byte, error) {
	switch s {
	case "Locked":
		return 0x00, nil
	case "Unlocked":
		return 0x55, nil
	}
	return 0, fmt.Errorf("unknown lock mode %q", s)
}

func bit(b bool, n uint) uint16 {
	if b {
		return 1 << n
	}
	return 0
}

// ParseMosYAML turns a configuration in mos's YAML format into the
// 128-byte configuration zone.
func ParseMosYAML(text []byte) ([]byte, error) {
	var m mosConfig
	if err := yaml.Unmarshal(text, &m); err != nil {
		return nil, err
	}
	if len(m.SlotInfo) != 16 {
		return nil, fmt.Errorf("%d slots, want 16", len(m.SlotInfo))
	}
	cfg := make([]byte, 128)
	if len(m.SerialNum) == 9 {
		copy(cfg[0:4], m.SerialNum[:4])
		copy(cfg[8:13], m.SerialNum[4:])
	}
	binary.BigEndian.PutUint32(cfg[4:], m.Revision)
	cfg[13], cfg[15], cfg[16], cfg[17], cfg[18] = m.Reserved13, m.Reserved15, m.I2CAddress, m.Reserved17, m.OTPMode
	if m.I2CEnable {
		cfg[14] = 1
	}
	cm := bit(m.ChipMode.SelectorWriteOnce, 0) | bit(m.ChipMode.TTLEnable, 1) | bit(m.ChipMode.WatchdogDuration == "10s", 2)
	cfg[19] = byte(cm)
	for _, s := range m.SlotInfo {
		if s.Num < 0 || s.Num > 15 {
			return nil, fmt.Errorf("bad slot number %d", s.Num)
		}
		sc, kc := s.SlotConfig, s.KeyConfig
		v := uint16(sc.ReadKey & 0xF)
		if p := sc.PrivateKeySlotConfig; p != nil {
			v = bit(p.ExtSignEnable, 0) | bit(p.IntSignEnable, 1) | bit(p.ECDHEnable, 2) | bit(p.ECDHToNextSlot, 3)
		}
		v |= bit(sc.NoMAC, 4) | bit(sc.LimitedUse, 5) | bit(sc.EncryptRead, 6) | bit(sc.IsSecret, 7)
		v |= uint16(sc.WriteKey&0xF)<<8 | uint16(sc.WriteConfig&0xF)<<12
		binary.LittleEndian.PutUint16(cfg[20+2*s.Num:], v)
		kt, ok := keyTypes[kc.KeyType]
		if !ok {
			return nil, fmt.Errorf("slot %d: unknown key type %q", s.Num, kc.KeyType)
		}
		k := bit(kc.Private, 0) | bit(kc.PubInfo, 1) | kt<<2 | bit(kc.Lockable, 5) | bit(kc.ReqRandom, 6) |
			bit(kc.ReqAuth, 7) | uint16(kc.AuthKey&0xF)<<8 | bit(kc.IntrusionDisable, 12) | uint16(kc.X509ID&3)<<14
		binary.LittleEndian.PutUint16(cfg[96+2*s.Num:], k)
	}
	binary.BigEndian.PutUint64(cfg[52:], m.Counter0)
	binary.BigEndian.PutUint64(cfg[60:], m.Counter1)
	binary.BigEndian.PutUint64(cfg[68:], m.LastKeyUse0)
	binary.BigEndian.PutUint64(cfg[76:], m.LastKeyUse1)
	cfg[84], cfg[85] = m.UserExtra, m.Selector
	var err error
	if cfg[86], err = lockByte(m.LockValue); err != nil {
		return nil, err
	}
	if cfg[87], err = lockByte(m.LockConfig); err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint16(cfg[88:], m.SlotLocked)
	cfg[90], cfg[91] = m.Reserved90, m.Reserved91
	for i, f := range m.X509Format {
		if i < 4 {
			cfg[92+i] = f.PublicPosition&0xF | f.TemplateLength<<4
		}
	}
	return cfg, nil
}
