package emu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/ota"
	"github.com/mosemu/mosemu/emu/partition"
	lfs "github.com/mosemu/mosemu/fs"
	devtls "github.com/mosemu/mosemu/tls"
)

// OTAFile holds the updater's boot status (what the firmware keeps in NVS)
// and the identity of firmware written by updates.
const OTAFile = "ota.json"

func (d *Device) otaEnv(t partition.Table) ota.Env {
	return ota.Env{Table: t, Log: d.log,
		Store: &ota.Store{Path: filepath.Join(d.opts.StateDir, OTAFile)},
		Open: func(e partition.Entry) flash.Device {
			return flash.NewWindow(d.cpuView(e.Encrypted()), int64(e.Offset), int64(e.Size))
		}}
}

// selectBoot runs the bootloader's app selection and the updater's early
// init. It returns nil on boards or partition tables without OTA slots (and
// leaves a corrupt table for the boot sequence to report).
func (d *Device) selectBoot() (*ota.Boot, error) {
	if !d.board.HasPartitionTable {
		return nil, nil
	}
	raw := make([]byte, partition.TableSize)
	if _, err := d.cpuView(true).ReadAt(raw, partition.Offset); err != nil {
		return nil, nil
	}
	t, err := partition.Parse(raw)
	if err != nil {
		return nil, nil
	}
	b, err := ota.Select(d.otaEnv(t))
	if errors.Is(err, ota.ErrNoOTA) {
		return nil, nil
	}
	return b, err
}

// bootLabel is the app partition the banner names.
func bootLabel(b *ota.Boot) string {
	if b == nil {
		return "app_0"
	}
	return b.App.Label
}

// applyUpdate merges the old filesystem into the new one on the first boot
// after an update (mgos_ota_apply_update), before the config is read.
func (d *Device) applyUpdate(fw *firmware) error {
	b := fw.boot
	if b == nil {
		return nil
	}
	oldSlot, ok := b.NeedsMerge()
	if !ok {
		return nil
	}
	part, ok := ota.FSPartition(b.Table(), oldSlot)
	if !ok {
		return errors.New("no old FS partition")
	}
	old, err := lfs.Mount(flash.NewWindow(d.cpuView(part.Encrypted()), int64(part.Offset), int64(part.Size)))
	if err != nil {
		return fmt.Errorf("failed to mount old file system: %w", err)
	}
	defer old.Unmount()
	return ota.MergeFS(old, fw.fs, d.log)
}

// fwIdentity returns the app name, fw_version and fw_id of the running
// firmware: from the update that wrote the slot, else the app image's
// esp_app_desc_t, else the factory build.
func (d *Device) fwIdentity(fw *firmware) ota.SlotInfo {
	id := ota.SlotInfo{Name: AppName, Version: FWVersion, BuildID: d.fwID()}
	if fw == nil || fw.boot == nil {
		return id
	}
	if si := fw.boot.Ident; si != nil {
		return ota.SlotInfo{Name: orDefault(si.Name, AppName), Version: si.Version, BuildID: si.BuildID}
	}
	if desc := fw.boot.Image.Desc; desc != nil && (desc.Project != AppName || desc.Version != FWVersion) {
		id.Name, id.Version = desc.Project, desc.Version
		if t, err := time.Parse("Jan _2 2006 15:04:05", desc.Date+" "+desc.Time); err == nil {
			id.BuildID = t.Format("20060102-150405") + "/" + desc.Version
		}
	}
	return id
}

// startOTA registers the OTA.* service of the updater.
func (d *Device) startOTA(fw *firmware) {
	if fw.boot == nil {
		return
	}
	u := &ota.Updater{Boot: fw.boot, FS: fw.fs, Platform: d.board.Arch, Running: d.fwIdentity(fw), Log: d.log,
		Reboot: d.ScheduleReboot, Supervise: d.protect,
		Settings: func() ota.Settings {
			c := fw.cfg.Get()
			s := ota.Settings{Timeout: c.Int("update.timeout"), CommitTimeout: c.Int("update.commit_timeout"),
				SigReqMask: c.Int("update.sig_req_mask")}
			for i := range s.Keys {
				s.Keys[i] = c.String(fmt.Sprintf("update.key%d", i))
			}
			return s
		}}
	fw.updater = u
	fw.onStop(u.Abort)
	svc := &ota.Service{U: u, HTTPClient: func(raw string) (*http.Client, error) {
		pu, err := url.Parse(raw)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") {
			return nil, fmt.Errorf("unsupported URL %q", raw)
		}
		tr := &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
		if pu.Scheme == "https" {
			c := fw.cfg.Get()
			cert := c.String("update.ssl_client_cert_file") // key in the same file
			tc, err := devtls.ClientConfig(fw.fs, cert, cert, c.String("update.ssl_ca_file"),
				orDefault(c.String("update.ssl_server_name"), pu.Hostname()), fw.tlsOptions(d))
			if err != nil {
				return nil, fmt.Errorf("TLS setup failed: %v", err)
			}
			handshake, dial := devtls.Dialer(tc), tr.DialContext
			tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				if dl, ok := ctx.Deadline(); ok {
					c.SetDeadline(dl)
				}
				tc, err := handshake(c)
				if err != nil {
					c.Close()
					return nil, err
				}
				c.SetDeadline(time.Time{})
				return tc, nil
			}
		}
		return &http.Client{Transport: tr, Timeout: 10 * time.Minute}, nil
	}}
	svc.ExtraHeaders = func() string { return fw.cfg.Get().String("update.extra_http_headers") }
	svc.Register(fw.disp)
	c := fw.cfg.Get()
	if url, every := c.String("update.url"), c.Int("update.interval"); url != "" && every > 0 {
		stop := make(chan struct{})
		fw.onStop(func() { close(stop) })
		go d.protect("OTA update poll", func() { svc.Poll(url, time.Duration(every)*time.Second, stop) })
	}
}

// finishBoot ends the first boot after an update: commit watchdog or
// immediate commit.
func (d *Device) finishBoot(fw *firmware) {
	if fw.updater != nil {
		fw.updater.BootFinish(true)
	}
}

// revertFailedUpdate handles a first boot after an update that failed
// before the firmware came up: revert and reboot into the old slot.
func (d *Device) revertFailedUpdate(b *ota.Boot, err error) {
	if b == nil || !b.IsFirstBoot() {
		return
	}
	d.log.Error("Update failed to boot: "+err.Error(), console.Src("mgos_ota_core.c", 740))
	if b.Revert() {
		d.ScheduleReboot(100 * time.Millisecond)
	}
}

// forgetUpdates drops the updater's record when the flash is blank (a
// factory image is being written): NVS would be blank too.
func (d *Device) forgetUpdates() {
	os.Remove(filepath.Join(d.opts.StateDir, OTAFile))
}
