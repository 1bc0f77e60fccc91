package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/mosemu/mosemu/efuse"
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/flashenc"
	"github.com/spf13/cobra"
)

func flashCmd() *cobra.Command {
	c := &cobra.Command{Use: "flash", Short: "Inspect a device's SPI flash (read-only: safe while the device runs)"}
	var state string
	var hexOut, decrypt bool
	dump := &cobra.Command{
		Use:   "dump ADDR LEN",
		Short: "Write LEN bytes of raw flash at ADDR to stdout (what a flash-read shows), or --decrypt them",
		Args:  exactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			addr, err := strconv.ParseInt(args[0], 0, 64)
			if err != nil {
				return fmt.Errorf("bad address %q", args[0])
			}
			n, err := strconv.ParseInt(args[1], 0, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("bad length %q", args[1])
			}
			b, err := readFlash(state, addr, n)
			if err == nil && decrypt {
				b, err = decryptFlash(state, addr, b)
			}
			if err != nil {
				return err
			}
			if hexOut {
				fmt.Print(hex.Dump(b))
				return nil
			}
			_, err = os.Stdout.Write(b)
			return err
		},
	}
	dump.Flags().StringVar(&state, "state", "state/default", "state directory")
	dump.Flags().BoolVar(&hexOut, "hex", false, "print a hex dump instead of raw bytes")
	dump.Flags().BoolVar(&decrypt, "decrypt", false, "decrypt with the device's flash encryption key (as the CPU reads it)")
	c.AddCommand(dump)
	return c
}

// readFlash reads the persisted flash image of a device that may be running.
// The image is written through on every program and erase, so it is
// current; it is opened read-only (a running device, or a read-only copy of
// a state directory, is never touched). Bytes are stored inverted and erased
// sectors are holes (see emu/flash).
func readFlash(state string, addr, n int64) ([]byte, error) {
	if _, err := loadIdentity(state); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(state, emu.FlashFile))
	if err != nil {
		return nil, fmt.Errorf("%w (the device has not booted yet)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if addr < 0 || addr+n > st.Size() {
		return nil, fmt.Errorf("[%#x, %#x) is beyond the %d-byte flash", addr, addr+n, st.Size())
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, addr); err != nil {
		return nil, err
	}
	for i := range b {
		b[i] ^= 0xFF
	}
	return b, nil
}

// loadIdentity reads STATE/device.json without creating anything, so that
// a mistyped --state gets a clear error.
func loadIdentity(state string) (emu.Identity, error) {
	var id emu.Identity
	b, err := os.ReadFile(filepath.Join(state, emu.StateFile))
	if err != nil {
		if _, serr := os.Stat(state); serr != nil {
			return id, fmt.Errorf("no device state at %s: %w", state, serr)
		}
		return id, fmt.Errorf("%s is not a device state directory: %w", state, err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("%s: %w", filepath.Join(state, emu.StateFile), err)
	}
	return id, nil
}

func efuseCmd() *cobra.Command {
	c := &cobra.Command{Use: "efuse", Short: "Inspect a device's efuses (read-only: safe while the device runs)"}
	var state string
	dump := &cobra.Command{
		Use:   "dump",
		Short: "Print the efuses as `mos esp32-efuse-get` does",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			id, err := loadIdentity(state)
			if err != nil {
				return err
			}
			if b, _ := emu.BoardFor(id.Arch); !b.HasEfuses {
				return fmt.Errorf("%s holds an %s device: it has no efuses", state, id.Arch)
			}
			path := filepath.Join(state, emu.EfuseFile)
			if _, err := os.Stat(path); err != nil {
				return err
			}
			e, err := efuse.Load(path, 0)
			if err != nil {
				return err
			}
			e.Dump(os.Stdout)
			return nil
		},
	}
	dump.Flags().StringVar(&state, "state", "state/default", "state directory")
	c.AddCommand(dump)
	return c
}

// decryptFlash decrypts b read at addr with the device's efuse key.
func decryptFlash(state string, addr int64, b []byte) ([]byte, error) {
	e, err := efuse.Load(filepath.Join(state, emu.EfuseFile), 0)
	if err != nil {
		return nil, err
	}
	if !e.EncryptionEnabled() {
		return nil, fmt.Errorf("flash encryption is not enabled on this device (FLASH_CRYPT_CNT %#x)", e.FlashCryptCnt())
	}
	c, err := flashenc.NewCipher(e.FlashEncryptionKey(), e.FlashCryptConfig())
	if err != nil {
		return nil, err
	}
	start, end := addr&^15, (addr+int64(len(b))+15)&^15
	buf, err := readFlash(state, start, end-start)
	if err != nil {
		return nil, err
	}
	if err := c.Decrypt(buf, buf, uint32(start)); err != nil {
		return nil, err
	}
	return buf[addr-start : addr-start+int64(len(b))], nil
}
