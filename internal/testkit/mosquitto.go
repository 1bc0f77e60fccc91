package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// StartMosquitto runs a real mosquitto broker, allowing anonymous clients,
// on a free loopback port for the duration of the test, with the extra
// configuration lines extra, and returns the port. Outside CI a missing
// mosquitto skips the test; in CI it fails it (see MissingPeer).
func StartMosquitto(t testing.TB, extra string) int {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto" // not on a non-root user's $PATH
	}
	if _, err := os.Stat(bin); err != nil {
		MissingPeer(t, "needs mosquitto (apt-get install mosquitto, run by make test-deps)")
	}
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	// "user" keeps a root mosquitto from switching to an account that
	// cannot read the test's files.
	name := "root"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	text := fmt.Sprintf("user %s\nlistener %s 127.0.0.1\nallow_anonymous true\n%s", name, port, extra)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
	}
	n, _ := strconv.Atoi(port)
	return n
}
