package labui

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mosemu/mosemu/internal/testkit"
	"github.com/spf13/afero"
)

// browser starts headless Chromium with a fresh profile and returns a
// context for chromedp actions. On failure a screenshot of the page is
// saved in $MOSEMU_ARTIFACTS (default: the system temp dir).
func browser(t *testing.T) context.Context {
	t.Helper()
	exe := testkit.NeedTool(t, "apt-get install chromium, or run .ci/deps.sh", "chromium", "chromium-browser", "google-chrome")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 2400),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelC := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		if t.Failed() {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)); err == nil {
				dir := os.Getenv("MOSEMU_ARTIFACTS")
				if dir == "" {
					dir = filepath.Join(os.TempDir(), "mosemu-artifacts")
				}
				os.MkdirAll(dir, 0o755)
				name := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".png")
				if os.WriteFile(name, png, 0o644) == nil {
					t.Logf("screenshot of the failure: %s", name)
				}
			}
			cancel()
		}
		cancelC()
		cancelB()
		cancelA()
	})
	if err := chromedp.Do(ctx); err != nil { // start the browser
		t.Fatalf("starting %s: %v", exe, err)
	}
	return ctx
}

// waitJS polls a JavaScript condition until it is true.
func waitJS(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			st, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("status").textContent`))
			t.Fatalf("timed out waiting for: %s (page status: %q)", what, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBrowserLabConsole drives the lab console in headless Chromium: the
// page loads, a curl RPC call shows in the trace, enabling flash encryption
// turns the fs sectors from plaintext to ciphertext on the map, and the
// reset, snapshot and restore buttons work.
func TestBrowserLabConsole(t *testing.T) {
	curl := testkit.NeedTool(t, "apt-get install curl, or run .ci/deps.sh", "curl")
	ctx := browser(t)
	dir := t.TempDir()
	seat, base := startConsole(t, dir)
	d := seat.Device()
	afero.WriteFile(d.FS(), "key.pem", []byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBbJ\n-----END EC PRIVATE KEY-----\n"), 0o644)

	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "page connected", `document.body.dataset.connected === "true"`)
	waitJS(t, ctx, "console shows the boot banner", `document.getElementById("console").textContent.includes("Mongoose OS")`)
	waitJS(t, ctx, "flash map drawn", `document.querySelectorAll("#flashmap .cell").length === 1024`)

	// An RPC call made with curl appears in the trace.
	if out, err := exec.Command(curl, "-sS", "-m", "10", "http://"+d.HTTPAddr()+"/rpc/FS.List").CombinedOutput(); err != nil {
		t.Fatalf("curl: %v %s", err, out)
	}
	waitJS(t, ctx, "curl call in the RPC trace", `[...document.querySelectorAll("#rpc tbody tr")].some(r => r.dataset.method === "FS.List" && r.cells[1].textContent === "HTTP" && r.dataset.auth === "anonymous")`)

	// The level filter: an error line stays, the info banner goes.
	exec.Command(curl, "-sS", "-m", "10", "http://"+d.HTTPAddr()+"/rpc/No.Such").Run()
	waitJS(t, ctx, "error line logged", `document.getElementById("console").textContent.includes("No handler for No.Such")`)
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("con-level"), "0")); err != nil {
		t.Fatal(err)
	}
	chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("con-level").dispatchEvent(new Event("input")), true`))
	waitJS(t, ctx, "only errors shown", `(() => { const c = document.getElementById("console"); return c.textContent.includes("No handler for No.Such") && !c.textContent.includes("Mongoose OS 2"); })()`)
	chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const s = document.getElementById("con-level"); s.value = "4"; s.dispatchEvent(new Event("input")); return true; })()`))

	// The fs partition is plaintext with a flagged key.
	waitJS(t, ctx, "fs_0 plaintext", `(() => { const r = document.querySelector('#parts tr[data-label="fs_0"]'); return r && +r.dataset.plain > 0 && +r.dataset.cipher === 0; })()`)
	waitJS(t, ctx, "private key flagged", `document.getElementById("secrets").textContent.includes("private key")`)

	// Snapshot through the page, before encryption.
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("snapname"), "plain"), chromedp.Click(chromedp.ID("btn-snapshot"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "snapshot listed", `document.getElementById("snapshots").textContent.includes("plain")`)

	// Enable flash encryption as mosemu run --flash-encryption does: the
	// next boot encrypts the flash in place.
	if err := d.SetBootloaderFlashEncryption(true); err != nil {
		t.Fatal(err)
	}
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "fs_0 ciphertext", `(() => { const r = document.querySelector('#parts tr[data-label="fs_0"]'); return r && +r.dataset.plain === 0 && +r.dataset.cipher > 0; })()`)
	waitJS(t, ctx, "no plaintext secret", `document.getElementById("secrets").textContent.includes("none found")`)
	waitJS(t, ctx, "efuses show encryption", `document.getElementById("fe").textContent.includes("ON")`)
	waitJS(t, ctx, "efuse burns listed", `document.getElementById("events").textContent.includes("FLASH_CRYPT_CNT 0x00 -> 0x01")`)
	waitJS(t, ctx, "key block read-protected", `document.querySelector('#blocks tr[data-block="1"]').textContent.includes("read-protected")`)

	// Reset: the firmware reboots (the banner is printed again).
	before, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.getElementById("console").textContent.split("Mongoose OS 2").length`))
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("btn-reset"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "reset logged and rebooted", fmt.Sprintf(`document.getElementById("events").textContent.includes("reset") && document.getElementById("console").textContent.split("Mongoose OS 2").length > %d`, before))

	// Restore the plaintext snapshot: the map is plaintext again.
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("snapname"), "plain"), chromedp.Click(chromedp.ID("btn-restore"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "restored to plaintext", `(() => { const r = document.querySelector('#parts tr[data-label="fs_0"]'); return r && +r.dataset.plain > 0 && +r.dataset.cipher === 0; })()`)
	waitJS(t, ctx, "efuses back to no encryption", `document.getElementById("fe").textContent.includes("off")`)
	if seat.Device().Efuses().EncryptionEnabled() {
		t.Fatal("the device still has flash encryption after the restore")
	}
}
