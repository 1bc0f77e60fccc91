package emu

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	atcahost "github.com/mosemu/mosemu/atca/host"
	"github.com/mosemu/mosemu/configs"
	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/ota"
	"github.com/mosemu/mosemu/emu/partition"
	"github.com/mosemu/mosemu/emu/wifi"
	lfs "github.com/mosemu/mosemu/fs"
	"github.com/mosemu/mosemu/mqtt"
	"github.com/mosemu/mosemu/rpc"
	devtls "github.com/mosemu/mosemu/tls"
)

// firmware is the state of one boot of Mongoose OS on the device: it is
// rebuilt from flash on every boot and torn down on reboot.
type firmware struct {
	started     time.Time
	table       partition.Table
	fsPart      partition.Entry
	fs          *lfs.FS
	cfg         *configs.Store
	disp        *rpc.Dispatcher
	mqtt        *mqtt.Client
	ram         *devtls.RAM
	atca        *atcahost.Driver    // nil without sys.atca.enable or a chip
	atcaOffload *devtls.ATCAOffload // mbedTLS's ECDH/ECDSA offload to atca
	boot        *ota.Boot           // app slot and update state; nil without OTA slots
	updater     *ota.Updater        // nil without OTA slots
	wifi        *wifi.Station
	stops       []func() // run in reverse order on stop
}

func (fw *firmware) onStop(f func()) { fw.stops = append(fw.stops, f) }

func (fw *firmware) stop() {
	for i := len(fw.stops) - 1; i >= 0; i-- {
		fw.stops[i]()
	}
	fw.stops = nil
}

// rawOrCPU returns the view of flash the firmware's CPU has of a region:
// transparently decrypted when flash encryption is on and the region is
// encrypted, raw otherwise.
func (d *Device) cpuView(encrypted bool) flash.Device {
	if encrypted {
		if v := d.cryptView(); v != nil {
			return v
		}
	}
	return d.flash
}

// boot runs the chip from reset (cause d.cause) through what is in flash:
// ROM, 2nd-stage bootloader, Mongoose OS. A stage that fails returns a
// *BootError.
func (d *Device) boot() (_ *firmware, err error) {
	fw := &firmware{started: time.Now(), ram: devtls.NewRAMReserve(d.board.RAMSize, d.board.RAMFreeAtBoot, d.board.HeapReserve)}
	booted := false
	defer func() {
		if !booted { // an error or a crash: release what was started
			fw.stop()
			d.revertFailedUpdate(fw.boot, err) // a new firmware that does not boot is rolled back
		}
	}()
	if d.board.Arch == "esp8266" { // ROM, rBoot, app slot: boot8266.go
		if fw.fsPart, err = d.boot8266(); err != nil {
			if errors.Is(err, errNoROM) { // the ROM or rBoot stops: no loop
				return nil, &BootError{Stage: "ROM", Reason: err.Error()}
			}
			return nil, d.firmwareFailure(err)
		}
		// The updater's early init on rBoot (ota8266.go).
		if fw.boot, err = d.selectBoot8266(); err != nil {
			return nil, d.firmwareFailure(err)
		}
		d.bootBanner8266(fw.boot)
	} else {
		if err := d.romBootESP32(); err != nil {
			return nil, err
		}
		if fw.table, _, err = d.bootloaderESP32(); err != nil {
			return nil, err
		}
		// The updater's early init (slot, update status, tombstone).
		if fw.boot, err = d.selectBoot(); err != nil {
			return nil, d.firmwareFailure(err)
		}
		d.banner(d.fwIdentity(fw), bootLabel(fw.boot))
	}

	// Locate the root filesystem.
	if d.board.HasPartitionTable {
		var ok bool
		if fw.boot != nil && fw.boot.FS.Size != 0 {
			fw.fsPart, ok = fw.boot.FS, true
		} else if fw.fsPart, ok = fw.table.RootFS(); !ok {
			return nil, d.firmwareFailure(errors.New("no filesystem partition in the partition table"))
		}
	}
	dev := flash.NewWindow(d.cpuView(fw.fsPart.Encrypted()), int64(fw.fsPart.Offset), int64(fw.fsPart.Size))
	raw := flash.NewWindow(d.flash, int64(fw.fsPart.Offset), int64(fw.fsPart.Size))
	if fw.fs, err = mountRootFS(dev, raw, d); err != nil {
		return nil, d.firmwareFailure(err)
	}
	fw.onStop(func() { fw.fs.Unmount() })
	if err := d.applyUpdate(fw); err != nil {
		return nil, d.firmwareFailure(fmt.Errorf("applying the update: %w", err))
	}
	if err := d.provision(fw.fs); err != nil {
		return nil, d.firmwareFailure(err)
	}
	if err := d.startFirmware(fw); err != nil {
		return nil, d.firmwareFailure(err)
	}
	// The devices of a fleet boot to the same filesystem metadata (the
	// provisioned config): one copy of those sectors for all of them.
	d.flash.Share(0, d.flash.Size())
	d.finishBoot(fw)
	booted = true
	return fw, nil
}

// firmwareFailure logs why Mongoose OS could not start; the firmware then
// restarts the chip (esp_restart), which boots it again. A host address
// the emulator cannot bind halts the device instead: retrying would not
// help.
func (d *Device) firmwareFailure(err error) error {
	d.log.Error(err.Error(), console.Src("mgos_init.c", 115))
	next := resetSoftwareCPU
	if errors.Is(err, ErrHostBind) {
		next = 0
	}
	return &BootError{Stage: "firmware", Reason: err.Error(), next: next, err: err}
}

// mountRootFS mounts the root filesystem, formatting a blank partition as
// the firmware does on first boot.
func mountRootFS(dev, raw flash.Device, d *Device) (*lfs.FS, error) {
	fsys, err := lfs.Mount(dev)
	if err == nil {
		return fsys, nil
	}
	// A blank partition is erased in the raw view (through the encryption
	// engine erased flash reads as noise), or, right after the first-boot
	// encryption pass encrypted it whole, erased in the decrypted view.
	if !isBlank(raw) && !isBlank(dev) {
		return nil, fmt.Errorf("failed to mount the root filesystem: %v; not booting", err)
	}
	d.log.Info("Formatting the root filesystem", console.Src("mgos_vfs.c", 314))
	if err := lfs.Format(dev); err != nil {
		return nil, fmt.Errorf("formatting the root filesystem: %w", err)
	}
	return lfs.Mount(dev)
}

// isBlank reports whether the first two blocks of dev are erased.
func isBlank(dev flash.Device) bool {
	b := make([]byte, 2*flash.SectorSize)
	if _, err := dev.ReadAt(b, 0); err != nil {
		return false
	}
	return bytes.Count(b, []byte{0xFF}) == len(b)
}

// factoryProvision writes the factory image on a new device's flash:
// bootloader, partition table, application and the root filesystem image,
// as `mos flash` of the mosemu firmware would leave them. A flash erased
// later (esptool erase_flash) stays erased: the chip then boot-loops until
// something is flashed.
func (d *Device) factoryProvision() error {
	d.forgetUpdates()
	img, err := d.factoryImage()
	if err != nil {
		return err
	}
	for _, w := range img {
		if _, err := d.flash.WriteAt(w.data, w.off); err != nil {
			return err
		}
		d.flash.Share(w.off, int64(len(w.data))) // the same bytes as every other device's
	}
	return nil
}

// factoryImage returns what factoryProvision writes, in order: the root
// filesystem image, then the boot loader, partition table and application
// of the board. Devices sharing Options.Factory share one copy.
func (d *Device) factoryImage() ([]factoryWrite, error) {
	if d.opts.Factory == nil {
		return d.buildFactoryImage()
	}
	return d.opts.Factory.get(factoryKey{arch: d.board.Arch, flashSize: d.board.FlashSize, schema: d.schema()}, d.buildFactoryImage)
}

// buildFactoryImage builds the factory image of the device's board.
func (d *Device) buildFactoryImage() ([]factoryWrite, error) {
	img, err := d.factoryFS()
	if err != nil {
		return nil, err
	}
	built := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // the build fw_id names (fwID)
	switch d.board.Arch {
	case "esp32":
		pt, err := partition.DefaultESP32().Marshal()
		if err != nil {
			return nil, err
		}
		app, _ := partition.DefaultESP32().Find("app_0")
		img = append(img,
			factoryWrite{0x1000, bootloaderImage()},
			factoryWrite{partition.Offset, pt},
			factoryWrite{int64(app.Offset), appImage(AppName, FWVersion, built)})
	case "esp8266":
		w, err := factoryImage8266(d.board.FlashSize)
		if err != nil {
			return nil, err
		}
		img = append(img, w...)
	}
	return img, nil
}

// banner prints the boot lines Mongoose OS prints (rpc.md §8).
func (d *Device) banner(id ota.SlotInfo, bootPartition string) {
	l := d.log
	d.out.Print("", "")
	d.out.Print("", "")
	l.Info(fmt.Sprintf("%s %s (%s)", id.Name, id.Version, id.BuildID), console.Src("mgos_init.c", 24))
	l.Info(fmt.Sprintf("Mongoose OS %s (%s)", MGVersion, MGID), console.Src("mgos_init.c", 25))
	l.Info(fmt.Sprintf("CPU: %d MHz, FreeRTOS 10.2.1, heap: %d total, %d free", d.board.CPUMHz, d.board.RAMSize, d.board.RAMFreeAtBoot), console.Src("mgos_init.c", 28))
	l.Info(d.board.SDK, console.Src("esp32_main.c", 101))
	l.Info(fmt.Sprintf("Boot partition: %s; flash: %dM", bootPartition, d.board.FlashSize>>20), console.Src("esp32_main.c", 106))
	l.Info("MAC: "+strings.ToLower(macColons(d.mac())), console.Src("esp32_main.c", 110))
	l.Info("WDT: 30 seconds", console.Src("esp32_main.c", 112))
}

func macColons(m [6]byte) string {
	return fmt.Sprintf("%02X:%02X:%02X:%02X:%02X:%02X", m[0], m[1], m[2], m[3], m[4], m[5])
}
