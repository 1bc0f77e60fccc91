package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/mosemu/mosemu/efuse"
	"github.com/mosemu/mosemu/emu"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/flashenc"
	"github.com/spf13/cobra"
)

func flashCmd() *cobra.Command {
	c := &cobra.Command{Use: "flash", Short: "Inspect a device's SPI flash offline"}
	var state string
	var hexOut, decrypt bool
	dump := &cobra.Command{
		Use:   "dump ADDR LEN",
		Short: "Write LEN bytes of raw flash at ADDR to stdout (what a flash-read shows), or --decrypt them",
		Args:  cobra.ExactArgs(2),
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

// readFlash reads the persisted flash image of a device that may be running
// (the image is written through, so it is always current).
func readFlash(state string, addr, n int64) ([]byte, error) {
	st, err := os.Stat(filepath.Join(state, emu.FlashFile))
	if err != nil {
		return nil, err
	}
	chip, err := flash.Open(filepath.Join(state, emu.FlashFile), st.Size())
	if err != nil {
		return nil, err
	}
	defer chip.Close()
	b := make([]byte, n)
	if _, err := chip.ReadAt(b, addr); err != nil {
		return nil, err
	}
	return b, nil
}

func efuseCmd() *cobra.Command {
	c := &cobra.Command{Use: "efuse", Short: "Inspect a device's efuses offline"}
	var state string
	dump := &cobra.Command{
		Use:   "dump",
		Short: "Print the efuses as `mos esp32-efuse-get` does",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			path := filepath.Join(state, emu.EfuseFile)
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("%s: %w (ESP8266 devices have no efuses)", path, err)
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
