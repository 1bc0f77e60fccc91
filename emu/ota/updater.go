package ota

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/spf13/afero"

	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/emu/flash"
	"github.com/mosemu/mosemu/emu/partition"
)

// State is the OTA state reported by OTA.Status (enum mgos_ota_state).
type State int

// OTA states.
const (
	StateIdle State = iota
	StateProgress
	StateError
	StateSuccess
)

func (s State) String() string {
	return [...]string{"idle", "progress", "error", "success"}[s]
}

// CommitTimeoutFile is where the commit timeout of a pending update is kept
// on the root filesystem (the old one; the merge carries it over).
const CommitTimeoutFile = "updater.dat"

// Settings are the update.* config values the updater reads.
type Settings struct {
	Timeout       int              // update.timeout, seconds
	CommitTimeout int              // update.commit_timeout, seconds
	Keys          [KeySlots]string // update.key0..7
	SigReqMask    int              // update.sig_req_mask
}

// Updater runs updates for one boot of the firmware. Its methods are safe
// for concurrent use.
type Updater struct {
	Boot     *Boot
	FS       afero.Fs // the running root filesystem
	Platform string   // FW_ARCHITECTURE, e.g. "esp32"
	Running  SlotInfo // identity of the running firmware
	Log      *slog.Logger
	Reboot   func(delay time.Duration)
	Settings func() Settings
	// Supervise, when set, runs the updater's timers under the device's
	// supervisor (a panic is the device's crash, not the process's).
	Supervise func(where string, f func())

	mu       sync.Mutex
	sess     *session
	watchdog *time.Timer
	closed   bool
}

type session struct {
	r             *Reader
	be            *backend
	state         State
	msg           string
	size          int64
	commitTimeout int
	wdt           *time.Timer
	wdtTimeout    time.Duration
	lastProgress  int64
	lastReport    time.Time
}

// BeginOptions are OTA.Begin's arguments.
type BeginOptions struct {
	Timeout           int   // seconds; 0 takes update.timeout
	CommitTimeout     *int  // seconds; nil takes update.commit_timeout
	Size              int64 // bundle size, for the progress figure
	IgnoreSameVersion bool
}

// Errors of the updater's control flow.
var (
	ErrInProgress   = errors.New("Update already in progress")
	ErrUncommitted  = errors.New("Previous update has not been committed yet")
	ErrNoUpdate     = errors.New("No update in progress")
	ErrUpdateFailed = errors.New("update failed")
)

// Begin starts an update session (updater_context_create).
func (u *Updater) Begin(o BeginOptions) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.sess != nil && u.sess.state == StateProgress {
		u.Log.Error(ErrInProgress.Error(), console.Src("mgos_ota_core.c", 180))
		return ErrInProgress
	}
	if u.Boot.IsFirstBoot() {
		u.Log.Error(ErrUncommitted.Error(), console.Src("mgos_ota_core.c", 190))
		return ErrUncommitted
	}
	set := u.Settings()
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = set.Timeout
	}
	ct := set.CommitTimeout
	if o.CommitTimeout != nil {
		ct = *o.CommitTimeout
	}
	s := &session{state: StateProgress, msg: "progress", size: o.Size, commitTimeout: ct,
		wdtTimeout: time.Duration(timeout) * time.Second}
	s.be = &backend{u: u, ignoreSame: o.IgnoreSameVersion}
	s.r = NewReader(s.be)
	if timeout > 0 {
		s.wdt = time.AfterFunc(s.wdtTimeout, func() { u.supervise("OTA timeout", func() { u.timeout(s) }) })
	}
	u.sess = s
	u.Log.Info(fmt.Sprintf("Starting, timeout %d, commit timeout %d, size %d", timeout, ct, o.Size), console.Src("mgos_ota_core.c", 210))
	return nil
}

func (u *Updater) timeout(s *session) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.sess != s || s.state != StateProgress {
		return
	}
	u.Log.Error("Update timed out", console.Src("mgos_ota_core.c", 120))
	u.failLocked(errors.New("Update timed out"))
}

func (u *Updater) failLocked(err error) error {
	s := u.sess
	s.state = StateError
	s.msg = err.Error()
	if be := (*BundleError)(nil); errors.As(err, &be) {
		if be.Log != "" {
			u.Log.Error(be.Log, console.Src("mgos_ota_core.c", 431))
		}
		s.msg = be.Status
	}
	if s.wdt != nil {
		s.wdt.Stop()
	}
	if s.msg != "" {
		u.Log.Error("Update failed: "+s.msg, console.Src("mgos_ota_core.c", 560))
	}
	return fmt.Errorf("%w: %s", ErrUpdateFailed, s.msg)
}

// Write feeds bundle bytes at offset (OTA.Write). Data already received
// (a retried chunk) is accepted and ignored; a gap is an error.
func (u *Updater) Write(offset int64, data []byte) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sess
	if s == nil {
		return ErrNoUpdate
	}
	if s.state != StateProgress {
		return fmt.Errorf("%w: %s", ErrUpdateFailed, s.msg)
	}
	got := s.r.Consumed()
	switch {
	case offset > got:
		return fmt.Errorf("offset %d, expected %d", offset, got)
	case offset+int64(len(data)) <= got:
		return nil
	}
	data = data[got-offset:]
	if s.r.Done() {
		return nil // past the central directory: nothing more of interest
	}
	if _, err := s.r.Write(data); err != nil {
		return u.failLocked(err)
	}
	u.progressLocked()
	return nil
}

func (u *Updater) progressLocked() {
	s := u.sess
	n := s.r.Consumed()
	if n-s.lastProgress < 50000 && time.Since(s.lastReport) < 5*time.Second && !s.r.Done() {
		return
	}
	if s.size > 0 {
		u.Log.Info(fmt.Sprintf("%.2f%% total, %s %d of %d", float64(n)*100/float64(s.size), s.r.cur.Name, s.r.cur.Size-s.r.left, s.r.cur.Size), console.Src("mgos_ota_core.c", 398))
	} else {
		u.Log.Info(fmt.Sprintf("%s %d of %d", s.r.cur.Name, s.r.cur.Size-s.r.left, s.r.cur.Size), console.Src("mgos_ota_core.c", 402))
	}
	if n != s.lastProgress && s.wdt != nil {
		s.wdt.Reset(s.wdtTimeout) // progress resets the update timeout
	}
	s.lastProgress, s.lastReport = n, time.Now()
}

// End finishes the update (OTA.End): when the whole bundle has arrived it
// finalizes (boot state, commit timeout) and schedules the reboot into the
// new firmware; otherwise the update is aborted. The session ends either way.
func (u *Updater) End() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sess
	if s == nil {
		return ErrNoUpdate
	}
	if s.state == StateSuccess {
		return nil
	}
	defer func() {
		if s.state != StateSuccess {
			u.sess = nil
		}
	}()
	if s.state == StateError {
		return fmt.Errorf("%w: %s", ErrUpdateFailed, s.msg)
	}
	if !s.r.Done() {
		u.Log.Error("Update terminated unexpectedly", console.Src("mgos_ota_core.c", 600))
		return u.failLocked(errors.New("Premature end of update"))
	}
	if s.be.skipped {
		s.state, s.msg = StateSuccess, "Version is the same as current"
		if s.wdt != nil {
			s.wdt.Stop()
		}
		u.sess = nil
		return nil
	}
	if err := u.finalizeLocked(s); err != nil {
		return u.failLocked(err)
	}
	s.state, s.msg = StateSuccess, "Update applied, finalizing"
	if s.wdt != nil {
		s.wdt.Stop()
	}
	u.Log.Info("Update applied, rebooting", console.Src("mgos_ota_core.c", 520))
	u.Reboot(500 * time.Millisecond)
	return nil
}

func (u *Updater) finalizeLocked(s *session) error {
	be := s.be
	if be.m == nil || !be.appDone || !be.fsDone {
		return errors.New("Incomplete update package")
	}
	if s.commitTimeout > 0 {
		if err := WriteCommitTimeout(u.FS, s.commitTimeout); err != nil {
			return errors.New("Cannot save update status")
		}
	}
	si := SlotInfo{Name: be.m.Name, Version: be.m.Version, BuildID: be.m.BuildID, ImageSize: be.appImage.Size, ImageSHA1: be.appImageSHA1}
	if err := u.Boot.markUpdated(be.slot, si); err != nil {
		return fmt.Errorf("Failed to set update status: %v", err)
	}
	return nil
}

// Abort ends any session (the firmware is stopping).
func (u *Updater) Abort() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	if s := u.sess; s != nil && s.wdt != nil {
		s.wdt.Stop()
	}
	if u.watchdog != nil {
		u.watchdog.Stop()
	}
}

// Info is what OTA.Status reports.
type Info struct {
	State           State
	Msg             string
	IsCommitted     bool
	CommitTimeout   int
	Partition       int
	ProgressPercent int
}

// Status returns the OTA status (mgos_ota_get_status).
func (u *Updater) Status() Info {
	u.mu.Lock()
	defer u.mu.Unlock()
	bs := u.Boot.State()
	i := Info{State: StateIdle, Msg: "idle", IsCommitted: bs.IsCommitted, Partition: bs.ActiveSlot,
		CommitTimeout: ReadCommitTimeout(u.FS)}
	if s := u.sess; s != nil {
		i.State, i.Msg = s.state, s.msg
		if s.size > 0 {
			i.ProgressPercent = int(s.r.Consumed() * 100 / s.size)
		}
	}
	return i
}

// Commit commits the running update (OTA.Commit).
func (u *Updater) Commit() bool {
	if !u.Boot.Commit() {
		return false
	}
	u.FS.Remove(CommitTimeoutFile)
	u.mu.Lock()
	if u.watchdog != nil {
		u.watchdog.Stop()
	}
	u.mu.Unlock()
	return true
}

// BootFinish is mgos_ota_boot_finish, called once the firmware is up: on
// the first boot of an update it arms the commit watchdog (commit timeout
// from updater.dat) or, without a timeout, commits at once. A failed first
// boot reverts and reboots.
func (u *Updater) BootFinish(ok bool) {
	if !u.Boot.IsFirstBoot() {
		return
	}
	if !ok {
		u.Boot.Revert()
		u.Reboot(0)
		return
	}
	ct := ReadCommitTimeout(u.FS)
	if ct <= 0 {
		u.Commit()
		return
	}
	u.Log.Info(fmt.Sprintf("Arming commit watchdog for %d seconds", ct), console.Src("mgos_ota_core.c", 790))
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return
	}
	u.watchdog = time.AfterFunc(time.Duration(ct)*time.Second, func() { u.supervise("OTA commit watchdog", u.commitExpired) })
}

// supervise runs f under Supervise, if set.
func (u *Updater) supervise(where string, f func()) {
	if u.Supervise != nil {
		u.Supervise(where, f)
		return
	}
	f()
}

// commitExpired reverts an update not committed in time.
func (u *Updater) commitExpired() {
	if !u.Boot.IsFirstBoot() {
		return
	}
	u.Log.Error("Update commit timeout expired", console.Src("mgos_ota_core.c", 770))
	if u.Boot.Revert() {
		u.Reboot(0)
	}
}

// WriteCommitTimeout stores the commit timeout in updater.dat (a C int).
func WriteCommitTimeout(fsys afero.Fs, seconds int) error {
	b := binary.LittleEndian.AppendUint32(nil, uint32(int32(seconds)))
	return afero.WriteFile(fsys, CommitTimeoutFile, b, 0o644)
}

// ReadCommitTimeout returns the commit timeout from updater.dat, 0 without.
func ReadCommitTimeout(fsys afero.Fs) int {
	b, err := afero.ReadFile(fsys, CommitTimeoutFile)
	if err != nil || len(b) < 4 {
		return 0
	}
	return int(int32(binary.LittleEndian.Uint32(b)))
}

// MergeFS copies every file of the old root filesystem that the new one
// does not have (mgos_ota_merge_fs): configs, keys, user data; files the new
// image ships win.
func MergeFS(oldFS, newFS afero.Fs, log *slog.Logger) error {
	return mergeDir(oldFS, newFS, "/", log)
}

func mergeDir(oldFS, newFS afero.Fs, dir string, log *slog.Logger) error {
	infos, err := afero.ReadDir(oldFS, dir)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", dir, err)
	}
	for _, fi := range infos {
		p := path.Join(dir, fi.Name())
		if fi.IsDir() {
			if err := newFS.MkdirAll(p, 0o755); err != nil {
				return err
			}
			if err := mergeDir(oldFS, newFS, p, log); err != nil {
				return err
			}
			continue
		}
		if _, err := newFS.Stat(p); err == nil {
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		log.Info("Copying "+strings.TrimPrefix(p, "/"), console.Src("mgos_ota_core.c", 660))
		data, err := afero.ReadFile(oldFS, p)
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", p, err)
		}
		if err := afero.WriteFile(newFS, p, data, 0o644); err != nil {
			newFS.Remove(p)
			return fmt.Errorf("failed to write %s: %w", p, err)
		}
	}
	return nil
}

// backend writes the parts of an ESP32 bundle to the inactive slot.
type backend struct {
	u          *Updater
	ignoreSame bool
	skipped    bool // same version as running, nothing written

	m            *Manifest
	slot         int
	appPart      partition.Entry
	fsPart       partition.Entry
	app, fs      Part
	cur          *writer
	appDone      bool
	fsDone       bool
	appImage     ImageInfo
	appImageSHA1 string
}

// writer programs one partition sector by sector through the CPU view.
type writer struct {
	p    partition.Entry
	dev  flash.Device
	part Part
	off  int64
	pend []byte
	sha  []byte // expected SHA-1
	app  bool
}

func (be *backend) Manifest(m *Manifest) error {
	u := be.u
	run := u.Running
	u.Log.Info(fmt.Sprintf("FW: %s %s %s %s -> %s %s", m.Name, m.Platform, run.Version, run.BuildID, m.Version, m.BuildID), console.Src("mgos_ota_core.c", 300))
	if !strings.EqualFold(m.Platform, u.Platform) {
		u.Log.Error(fmt.Sprintf("Wrong platform: want %q, got %q", u.Platform, m.Platform), console.Src("mgos_ota_core.c", 452))
		return bundleErr("Wrong platform")
	}
	set := u.Settings()
	res := CheckSignatures(m, set.Keys)
	u.Log.Info(fmt.Sprintf("Signature check result: 0x%02x (required 0x%02x)", res, uint8(set.SigReqMask)), console.Src("mgos_ota_core.c", 468))
	if !SignatureAccepted(res, set.SigReqMask) {
		u.Log.Error("Signature check failed", console.Src("mgos_ota_core.c", 471))
		return bundleErr("Signature check failed")
	}
	if be.ignoreSame && m.Version == run.Version && m.BuildID == run.BuildID {
		be.skipped = true
		return nil
	}
	cur := u.Boot.Slot
	n := slotCount(u.Boot.env.Table)
	if n < 2 {
		return errors.New("No app slots")
	}
	be.slot = (cur + 1) % n
	be.appPart, _ = AppPartition(u.Boot.env.Table, be.slot)
	var ok bool
	if be.fsPart, ok = FSPartition(u.Boot.env.Table, be.slot); !ok {
		return errors.New("No fs slots")
	}
	be.app, be.fs = m.Parts["app"], m.Parts["fs"]
	if _, ok := m.Parts["app"]; !ok && u.Boot.env.Loader != nil {
		be.app = m.Parts["fw"] // the ESP8266 build names its app part "fw"
	}
	if be.app.Src == "" || be.app.SHA1 == "" || be.fs.Src == "" || be.fs.SHA1 == "" {
		return bundleErr("Incomplete update package")
	}
	for _, p := range []Part{be.app, be.fs} {
		if _, err := hex.DecodeString(p.SHA1); err != nil || len(p.SHA1) != 40 {
			return bundleErr("bad cs_sha1 %q of %s", p.SHA1, p.Src)
		}
	}
	be.m = m
	u.Log.Info(fmt.Sprintf("App: %s -> %s, FS: %s -> %s", be.app.Src, be.appPart.Label, be.fs.Src, be.fsPart.Label), console.Src("esp32_updater.c", 190))
	return nil
}

func (be *backend) FileBegin(fi FileInfo) (bool, error) {
	if be.skipped || be.m == nil {
		return false, nil
	}
	var w *writer
	switch fi.Name {
	case be.app.Src:
		w = &writer{p: be.appPart, part: be.app, app: true}
	case be.fs.Src:
		w = &writer{p: be.fsPart, part: be.fs}
	default:
		be.u.Log.Debug("Not interesting: "+fi.Name, console.Src("esp32_updater.c", 290))
		return false, nil
	}
	w.dev = be.u.Boot.env.Open(w.p)
	w.sha, _ = hex.DecodeString(w.part.SHA1)
	if int64(fi.Size) > int64(w.p.Size) {
		return false, bundleErr("%s (%d bytes) does not fit %s (%d bytes)", fi.Name, fi.Size, w.p.Label, w.p.Size)
	}
	what := "FS"
	if w.app {
		what = "app"
	}
	if bytes.Equal(digest(w.dev, int64(fi.Size)), w.sha) {
		be.u.Log.Info(fmt.Sprintf("Skip writing %s (digest matches)", what), console.Src("esp32_updater.c", 248))
		if w.app {
			img, err := be.u.Boot.env.verify(w.dev, int64(w.p.Size))
			if err != nil {
				return false, errors.New("Failed to finalize app write")
			}
			be.appImage, be.appImageSHA1, be.appDone = img, hex.EncodeToString(digest(w.dev, int64(img.Size))), true
		} else {
			be.fsDone = true
		}
		return false, nil
	}
	if w.app {
		what = "app image"
	} else {
		what = "FS image"
	}
	be.u.Log.Info(fmt.Sprintf("Writing %s @ 0x%x", what, w.p.Offset), console.Src("esp32_updater.c", 255))
	if err := w.dev.Erase(0, int64(w.p.Size)); err != nil {
		return false, errors.New("Failed to start write")
	}
	be.cur = w
	return true, nil
}

func (be *backend) FileData(_ FileInfo, data []byte) error {
	w := be.cur
	w.pend = append(w.pend, data...)
	for len(w.pend) >= flash.SectorSize {
		if err := w.flush(flash.SectorSize); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) flush(n int) error {
	if _, err := w.dev.WriteAt(w.pend[:n], w.off); err != nil {
		return fmt.Errorf("Failed to write data: %v", err)
	}
	w.off += int64(n)
	w.pend = w.pend[n:]
	return nil
}

func (be *backend) FileEnd(fi FileInfo) error {
	w := be.cur
	be.cur = nil
	if n := len(w.pend); n > 0 {
		for len(w.pend)%16 != 0 { // the encryption engine writes 16-byte blocks
			w.pend = append(w.pend, 0xFF)
		}
		if err := w.flush(len(w.pend)); err != nil {
			return err
		}
	}
	if w.app {
		img, err := be.u.Boot.env.verify(w.dev, int64(w.p.Size))
		if err != nil {
			be.u.Log.Error(err.Error(), console.Src("esp_image_format.c", 320))
			return errors.New("Failed to finalize app write")
		}
		be.appImage = img
	}
	got := digest(w.dev, int64(fi.Size))
	if !bytes.Equal(got, w.sha) {
		be.u.Log.Error(fmt.Sprintf("%s: %d @ 0x%x, cs_sha1 %x, expected %x", w.p.Label, fi.Size, w.p.Offset, got, w.sha), console.Src("esp32_updater.c", 230))
		return errors.New("Digest mismatch")
	}
	be.u.Log.Info(fmt.Sprintf("%s verified (%s)", w.p.Label, w.part.SHA1), console.Src("esp32_updater.c", 370))
	if w.app {
		be.appImageSHA1, be.appDone = hex.EncodeToString(digest(w.dev, int64(be.appImage.Size))), true
	} else {
		be.fsDone = true
	}
	return nil
}

// digest returns the SHA-1 of the first n bytes of dev.
func digest(dev flash.Device, n int64) []byte {
	h := sha1.New()
	if _, err := io.Copy(h, io.NewSectionReader(dev, 0, n)); err != nil {
		return nil
	}
	return h.Sum(nil)
}
