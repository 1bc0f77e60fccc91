package main

// TestREADME follows README.md as a newcomer would: it runs the README's
// shell blocks, in order, in a copy of the repository, and fails on the
// first command that fails.
//
// What it runs, and the few things it changes (each logged with -v):
//
//   - Fenced blocks marked ```sh, ```bash or ```shell are run; other blocks
//     (output examples) are not. A block preceded by the line
//     <!-- readme-test: skip --> is not run either: use it for commands
//     that cannot run here (hardware, a registry, minutes of work), never
//     to hide a command that does not work.
//   - Each command runs with bash -e -o pipefail in the copy's root and must
//     exit 0; one whose trailing comment starts with "# fails" must exit
//     non-zero (e.g. a call the ACL refuses), and with "# fails: NNN" print
//     that code. A comment naming "finding=KIND" requires a background
//     device to log that finding. Lines starting with "export"
//     are kept for the commands that follow.
//   - `mos` is the repository's Go client: a `mos` script first on PATH runs
//     this test binary as internal/moscli (call, ls, get, put, rm,
//     config-get, config-set, ota, wifi, console, --port, --rpc-creds). The substitution is the
//     only stand-in: a README command that mos would run and the stand-in
//     does not know fails the test.
//   - Long-running commands (`make run`, `mosemu run`, `mosemu fleet`, their
//     ./bin/mosemu forms, `mos console`, and any line whose comment says
//     "another terminal") are started in the background, as the reader starts them
//     in another terminal; the test goes on once they print their banner
//     (mosemu's "device up" / "devices started" line, or for other commands
//     their first line plus half a second) and stops them (SIGINT, as
//     Ctrl-C) at the end. Before a
//     `mosemu factory-reset --state DIR` line, the device running on DIR is
//     stopped, as the README tells the reader to stop it first.
//   - `make test` is not run (it runs this test).
//   - Addresses: every 127.0.0.1:PORT in the README is replaced by a free
//     port, make's HTTP, BROKER and UI variables point at the ones standing
//     for 127.0.0.1:8080, :1883 and :9090, and a `mosemu run` line without
//     --http or --broker-addr gets the stand-ins of those defaults, so that the test never
//     touches a device someone runs on the default ports.
//   - `make install` installs into a temporary GOPATH (GOMODCACHE stays the
//     real one, so no download is needed), which the README's PATH line
//     then puts on PATH. GOFLAGS gets -trimpath, so that builds in the copy
//     hit the build cache.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mosemu/mosemu/internal/moscli"
	"github.com/mosemu/mosemu/internal/testkit"
)

// mosStandInEnv makes the test binary act as `mos`, and mosemuEnv as
// mosemu itself (see TestMain).
const (
	mosStandInEnv = "MOSEMU_README_MOS"
	mosemuEnv     = "MOSEMU_TEST_AS_MAIN"
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv(mosStandInEnv) == "1":
		os.Exit(moscli.Main(os.Args[1:], os.Stdout, os.Stderr))
	case os.Getenv(mosemuEnv) == "1":
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// readmeCommand is one command line of the README.
type readmeCommand struct {
	line int    // line number in README.md
	text string // the command as written (continuations joined)
}

// readmeSkipMarker before a block keeps the test from running it.
const readmeSkipMarker = "<!-- readme-test: skip -->"

// readmeBlocks returns the commands of the README's shell blocks, one slice
// per block, without the blocks marked with readmeSkipMarker.
func readmeBlocks(readme []byte) (blocks [][]readmeCommand, skipped []int) {
	sc := bufio.NewScanner(bytes.NewReader(readme))
	var (
		n       int
		in, run bool
		prev    string // last non-blank line before a fence
		cur     []readmeCommand
		pending string
		start   int
	)
	for sc.Scan() {
		n++
		line := sc.Text()
		trim := strings.TrimSpace(line)
		if !in {
			if strings.HasPrefix(trim, "```") {
				lang := strings.TrimSpace(strings.TrimPrefix(trim, "```"))
				in = true
				run = lang == "sh" || lang == "bash" || lang == "shell"
				if run && prev == readmeSkipMarker {
					run = false
					skipped = append(skipped, n)
				}
				cur = nil
			} else if trim != "" {
				prev = trim
			}
			continue
		}
		if strings.HasPrefix(trim, "```") {
			in = false
			if run && len(cur) > 0 {
				blocks = append(blocks, cur)
			}
			prev = ""
			continue
		}
		if !run {
			continue
		}
		if pending == "" {
			start = n
		}
		if strings.HasSuffix(line, "\\") {
			pending += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		text := strings.TrimSpace(pending + line)
		pending = ""
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		cur = append(cur, readmeCommand{line: start, text: text})
	}
	return blocks, skipped
}

var (
	runCmdLine   = regexp.MustCompile(`^(\./bin/)?mosemu run\b`)
	deviceCmd    = regexp.MustCompile(`^(make run\b|(\./bin/)?mosemu (run|fleet)\b)`)
	serverCmd    = regexp.MustCompile(deviceCmd.String() + `|^mos\b.*\sconsole\b|\s#.*\banother terminal\b`)
	expectFail   = regexp.MustCompile(`\s#\s*fails\b(?::\s*(\d{3}\b)?)?`)
	findingNote  = regexp.MustCompile(`\bfinding=([a-z][a-z ]*[a-z])`)
	stateFlag    = regexp.MustCompile(`--state[ =](\S+)`)
	makeStateVar = regexp.MustCompile(`\bSTATE=(\S+)`)
	loopbackAddr = regexp.MustCompile(`127\.0\.0\.1:(\d+)`)
	readyLine    = regexp.MustCompile(`device up|devices (\(shard [^)]*\) )?started|boot failed`)
)

// server is a long-running README command in the background.
type server struct {
	cmd   *exec.Cmd
	text  string
	out   *testkit.SyncBuffer
	state string
	done  chan struct{}
	// findings counts the findings already matched to README lines.
	findings map[string]int
}

// stop sends SIGINT to the server's process group (Ctrl-C) and waits.
func (s *server) stop(t *testing.T) {
	select {
	case <-s.done:
		return
	default:
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		t.Errorf("%q ignored SIGINT for 15 s: killed", s.text)
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every README block (about 30 s): not in -short mode")
	}
	for _, tool := range []string{"bash", "make", "go", "curl", "md5sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			testkit.MissingPeer(t, "README commands need %s, which is not installed", tool)
		}
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, skipped := readmeBlocks(readme)
	for _, l := range skipped {
		t.Logf("README.md:%d: block marked %s: not run", l, readmeSkipMarker)
	}

	tmp := t.TempDir()
	work := filepath.Join(tmp, "mosemu")
	if err := copyTree(root, work); err != nil {
		t.Fatal(err)
	}

	// The substitution of mos: a script that runs this binary as moscli.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fakeBin := filepath.Join(tmp, "fakebin")
	os.Mkdir(fakeBin, 0o755)
	script := fmt.Sprintf("#!/bin/sh\n# stand-in for mos: the repository's Go client (internal/moscli)\n%s=1 exec %q \"$@\"\n", mosStandInEnv, self)
	if err := os.WriteFile(filepath.Join(fakeBin, "mos"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("mos is substituted by %s (internal/moscli)", filepath.Join(fakeBin, "mos"))

	// Addresses: each README port gets a free one.
	ports := map[string]string{}
	mapPort := func(p string) string {
		if _, ok := ports[p]; !ok {
			ports[p] = testkit.FreeAddr(t)
			t.Logf("127.0.0.1:%s in the README stands for %s here", p, ports[p])
		}
		return ports[p]
	}
	mapPort("8080")
	broker := mapPort("1883") // make run's BROKER: devices started later find it there
	gomodcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{}
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "GOPATH", "GOBIN", "GOFLAGS", "PATH", "HTTP", "BROKER", "UI", "STATE", "ARCH", mosStandInEnv:
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"PATH="+fakeBin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"GOPATH="+filepath.Join(tmp, "gopath"),
		"GOMODCACHE="+strings.TrimSpace(string(gomodcache)),
		// -trimpath keeps file paths out of the compiled packages, so the
		// build cache serves the copy (in a new directory at every run).
		"GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -trimpath"),
		"HTTP="+ports["8080"],
		"BROKER="+broker,
		"UI="+mapPort("9090"),
	)
	prelude := filepath.Join(tmp, "exports.sh")
	os.WriteFile(prelude, nil, 0o644)

	var servers []*server
	defer func() {
		for _, s := range servers {
			s.stop(t)
		}
		if t.Failed() {
			for _, s := range servers {
				t.Logf("output of %q:\n%s", s.text, s.out.String())
			}
		}
	}()

	began := time.Now()
	for _, block := range blocks {
		for _, c := range block {
			text := loopbackAddr.ReplaceAllStringFunc(c.text, func(a string) string {
				return mapPort(strings.TrimPrefix(a, "127.0.0.1:"))
			})
			if runCmdLine.MatchString(text) { // mosemu run's default addresses are 8080 and 1883
				if !strings.Contains(text, "--http") {
					text += " --http " + mapPort("8080")
				}
				if !strings.Contains(text, "--broker") {
					text += " --broker-addr " + broker
				}
			}
			where := fmt.Sprintf("[%4.1fs] README.md:%d: %s", time.Since(began).Seconds(), c.line, c.text)
			if text != c.text {
				where += "\n    run as: " + text
			}
			switch {
			case strings.HasPrefix(text, "make test"):
				t.Logf("%s\n    not run: it runs this test", where)
				continue
			case strings.HasPrefix(text, "export "):
				f, _ := os.OpenFile(prelude, os.O_APPEND|os.O_WRONLY, 0)
				fmt.Fprintln(f, text)
				f.Close()
			case strings.Contains(text, "factory-reset"):
				state := "state/default"
				if m := stateFlag.FindStringSubmatch(text); m != nil {
					state = m[1]
				}
				for _, s := range servers {
					if filepath.Clean(s.state) == filepath.Clean(state) {
						t.Logf("stopping %q first (the README says to stop the device)", s.text)
						s.stop(t)
					}
				}
			}
			if serverCmd.MatchString(text) {
				t.Logf("%s\n    in the background", where)
				servers = append(servers, startServer(t, work, env, prelude, text, where))
				continue
			}
			t.Log(where)
			out, err := runShell(work, env, prelude, text)
			fails := expectFail.FindStringSubmatch(text)
			switch {
			case fails != nil && err == nil:
				t.Fatalf("%s\n    succeeded, the README says it fails:\n%s", where, out)
			case fails == nil && err != nil:
				t.Fatalf("%s\n    %v:\n%s", where, err, out)
			case fails != nil && fails[1] != "" && !bytes.Contains(out, []byte(fails[1])):
				t.Fatalf("%s\n    failed, but not with the %s the README says:\n%s", where, fails[1], out)
			}
			if m := findingNote.FindStringSubmatch(text[strings.Index(text, "#")+1:]); m != nil && strings.Contains(text, "#") {
				waitFinding(t, servers, "finding="+m[1], where)
			}
			if len(out) > 0 {
				t.Logf("    %s", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n    "))
			}
		}
	}
}

// waitFinding checks that a background device logged the finding the
// README's comment names (the count of occurrences grows).
func waitFinding(t *testing.T, servers []*server, finding, where string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, s := range servers {
			if n := strings.Count(s.out.String(), finding); n > s.findings[finding] {
				s.findings[finding] = n
				return
			}
		}
	}
	t.Fatalf("%s\n    no device logged %s, as the README says", where, finding)
}

// runShell runs one README command the way a reader's shell does.
func runShell(dir string, env []string, prelude, text string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -eo pipefail; source "+prelude+"\n"+text)
	cmd.Dir, cmd.Env = dir, env
	return cmd.CombinedOutput()
}

// startServer starts a long-running README command and waits for its banner.
func startServer(t *testing.T, dir string, env []string, prelude, text, where string) *server {
	t.Helper()
	s := &server{text: text, out: &testkit.SyncBuffer{}, done: make(chan struct{}), state: "state/default", findings: map[string]int{}}
	if m := stateFlag.FindStringSubmatch(text); m != nil {
		s.state = m[1]
	} else if m := makeStateVar.FindStringSubmatch(text); m != nil {
		s.state = m[1]
	}
	s.cmd = exec.Command("bash", "-c", "source "+prelude+"\nexec "+text)
	s.cmd.Dir, s.cmd.Env = dir, env
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.After(3 * time.Minute) // a cold build of the module included
	ready := func() bool { return readyLine.MatchString(s.out.String()) }
	if !deviceCmd.MatchString(text) {
		ready = func() bool { // not a device: up once it has said something
			if !strings.Contains(s.out.String(), "\n") {
				return false
			}
			time.Sleep(500 * time.Millisecond)
			return true
		}
	}
	for !ready() {
		select {
		case <-s.done:
			t.Fatalf("%s\n    exited before it was up:\n%s", where, s.out.String())
		case <-deadline:
			s.stop(t)
			t.Fatalf("%s\n    not up after 3 minutes:\n%s", where, s.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Logf("    %s", strings.ReplaceAll(strings.TrimSpace(s.out.String()), "\n", "\n    "))
	if strings.Contains(s.out.String(), "boot failed") {
		t.Fatalf("%s\n    the device did not boot:\n%s", where, s.out.String())
	}
	return s
}

// copyTree copies the repository as a fresh clone would have it: without
// build outputs, device state, installed node modules or VCS data.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.Name() == ".git" { // a directory, or a file in a git worktree
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			switch d.Name() {
			case "node_modules":
				return filepath.SkipDir
			}
			if rel == "bin" || rel == "state" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, info.Mode().Perm())
	})
}

func TestReadmeBlocks(t *testing.T) {
	md := "# t\n\n```sh\nmake run   # starts\n\n# a comment\nmos --port x \\\n  call A\n```\n\n```\noutput, not run\n```\n\n" +
		readmeSkipMarker + "\n\n```bash\nflash-a-real-board\n```\n\n```go\nfmt.Println()\n```\n\n```shell\nls # fails: ok\n```\n"
	blocks, skipped := readmeBlocks([]byte(md))
	got := fmt.Sprint(blocks)
	want := "[[{4 make run   # starts} {7 mos --port x    call A}] [{26 ls # fails: ok}]]"
	if got != want || fmt.Sprint(skipped) != "[17]" {
		t.Fatalf("readmeBlocks = %s, skipped %v\nwant %s, skipped [17]", got, skipped, want)
	}
	for text, bg := range map[string]bool{
		"make run": true, "./bin/mosemu run --state s": true, "mosemu fleet --count 3": true,
		"mosemu lab --http :0   # in another terminal": true, "mosemu flash dump": false, "mos call run": false,
		"mos console --port mqtt://h/d": true, "mos --port x console": true, "mos --port x call Console.Get": false,
	} {
		if serverCmd.MatchString(text) != bg {
			t.Errorf("%q: background = %v, want %v", text, !bg, bg)
		}
	}
	if !expectFail.MatchString("mos ls   # fails: 401") || expectFail.MatchString("mos ls   # allowed") {
		t.Error("expectFail")
	}
}
