package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mosemu/mosemu/emu"
	"github.com/spf13/afero"
	"golang.org/x/sys/unix"
)

// TestSaveRestoreDevice saves a real device, changes it, restores it and
// boots it: the change is gone, the state is whole.
func TestSaveRestoreDevice(t *testing.T) {
	dir := t.TempDir()
	boot := func() *emu.Device {
		d, err := emu.New(emu.Options{StateDir: dir, HTTPAddr: "127.0.0.1:0", Seed: 9})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := boot()
	afero.WriteFile(d.FS(), "before.txt", []byte("1"), 0o644)
	d.Close()
	st := Store{StateDir: dir}
	if _, err := st.Save("one"); err != nil {
		t.Fatal(err)
	}
	d = boot()
	afero.WriteFile(d.FS(), "after.txt", []byte("2"), 0o644)
	d.Efuses().Burn("JTAG_DISABLE", 1)
	d.Efuses().Save(filepath.Join(dir, emu.EfuseFile))
	// Refused while a process holds the device.
	release, err := Hold(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Restore("one"); !errors.Is(err, ErrRunning) {
		t.Fatalf("restore while running: %v", err)
	}
	release()
	d.Close()
	if err := st.Restore("one"); err != nil {
		t.Fatal(err)
	}
	d = boot()
	defer d.Close()
	if _, err := d.FS().Stat("after.txt"); err == nil {
		t.Error("after.txt survived the restore")
	}
	if _, err := d.FS().Stat("before.txt"); err != nil {
		t.Error("before.txt lost:", err)
	}
	if v, _ := d.Efuses().Value("JTAG_DISABLE"); v != 0 {
		t.Error("efuse burn survived the restore")
	}
	list, err := st.List()
	if err != nil || len(list) != 1 || list[0].Name != "one" {
		t.Fatalf("list %v %v", list, err)
	}
	if _, err := st.Save("../x"); err == nil {
		t.Error("bad name accepted")
	}
}

// TestRecoverCommittedRestore finishes a restore interrupted after its
// commit point and drops one interrupted before.
func TestRecoverCommittedRestore(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.bin"), []byte("old"), 0o644)
	stage := filepath.Join(dir, restoreDir)
	os.Mkdir(stage, 0o755)
	os.WriteFile(filepath.Join(stage, "a.bin"), []byte("new"), 0o644)
	st := Store{StateDir: dir}
	if err := st.Recover(); err != nil { // no commit: discarded
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.bin")); string(b) != "old" {
		t.Fatalf("uncommitted restore applied: %q", b)
	}
	os.Mkdir(stage, 0o755)
	os.WriteFile(filepath.Join(stage, "a.bin"), []byte("new"), 0o644)
	os.WriteFile(filepath.Join(dir, "extra.json"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(stage, commitFile), []byte(`{"files":["a.bin"],"remove":["extra.json"]}`), 0o644)
	if err := st.Recover(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.bin")); string(b) != "new" {
		t.Fatalf("committed restore not finished: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "extra.json")); err == nil {
		t.Fatal("extra.json not removed")
	}
	if _, err := os.Stat(stage); err == nil {
		t.Fatal("stage left behind")
	}
}

// TestRunningSeesStateLock honours a state directory lock (.lock, an
// exclusive flock held by a running device).
func TestRunningSeesStateLock(t *testing.T) {
	dir := t.TempDir()
	if busy, err := Running(dir); busy || err != nil {
		t.Fatalf("empty dir: %v %v", busy, err)
	}
	f, err := os.Create(filepath.Join(dir, ".lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if busy, err := Running(dir); !busy || err != nil {
		t.Fatalf("locked dir: %v %v", busy, err)
	}
	os.WriteFile(filepath.Join(dir, "device.json"), []byte("{}"), 0o644)
	if _, err := (Store{StateDir: dir}).Save("x"); !errors.Is(err, ErrRunning) {
		t.Fatalf("save of a locked dir: %v", err)
	}
}
