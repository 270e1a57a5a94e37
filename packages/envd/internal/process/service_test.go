package process

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"connectrpc.com/connect"

	rpc "fast-sandbox.io/envd/gen/process"
	"fast-sandbox.io/envd/internal/auth"
	"fast-sandbox.io/envd/internal/state"
	"fast-sandbox.io/envd/internal/users"
)

// checks is a Service whose sandbox has root and "tester" (uid 4242, also in group 5000), in a
// directory everyone may enter (not t.TempDir: its parent is private to root).
type checks struct {
	service *Service
	base    string
}

const testerID = 4242

func newChecks(t *testing.T) *checks {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests check what a user other than root may reach: run them as root (like the rest of npm test)")
	}
	base, err := os.MkdirTemp("", "fsb-process-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	home := filepath.Join(base, "home")
	mkdir(t, base, 0o755)
	mkdir(t, home, 0o755)
	mkdir(t, filepath.Join(base, "etc"), 0o755)
	writeFile(t, filepath.Join(base, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\ntester:x:4242:4242:Tester:"+home+":/bin/sh\n", 0o644)
	writeFile(t, filepath.Join(base, "etc", "group"), "root:x:0:\ntester:x:4242:\nextra:x:5000:tester\n", 0o644)
	st := state.New()
	return &checks{service: &Service{Processes: NewManager(), Auth: auth.New(users.Directory{Root: base}, st), State: st}, base: base}
}

// mkdir makes dir (root's) with exactly mode, past the umask.
func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// program writes a script named tool in dir (made 0755 when missing) that prints dir.
func program(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		mkdir(t, dir, 0o755)
	}
	writeFile(t, filepath.Join(dir, "tool"), "#!/bin/sh\necho "+dir+"\n", mode)
}

// spec resolves a StartRequest for user ("" is the daemon's own, root).
func (c *checks) spec(user string, config *rpc.ProcessConfig) (Spec, error) {
	request := connect.NewRequest(&rpc.StartRequest{Process: config})
	if user != "" {
		request.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
	return c.service.spec(request)
}

// runs starts spec and returns its output: the chosen program does start as the user.
func runs(t *testing.T, spec Spec) string {
	t.Helper()
	process := New(spec)
	output := process.Subscribe(Backlog{})
	defer process.Unsubscribe(output)
	if err := process.Start(nil, nil); err != nil {
		t.Fatalf("starting %s: %v", spec.Path, err)
	}
	var stdout bytes.Buffer
	for event := range events(output) {
		stdout.Write(event.GetData().GetStdout())
		if end := event.GetEnd(); end != nil {
			if end.GetExitCode() != 0 {
				t.Fatalf("%s ended with %d (%s)", spec.Path, end.GetExitCode(), end.GetError())
			}
			break
		}
	}
	return stdout.String()
}

// refused fails unless err is invalid_argument saying all of want.
func refused(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	var connectErr *connect.Error
	if !errors.As(err, &connectErr) || connectErr.Code() != connect.CodeInvalidArgument {
		t.Fatalf("%s: err %v, want invalid_argument", what, err)
	}
	for _, text := range want {
		if !strings.Contains(err.Error(), text) {
			t.Errorf("%s: %v, want it to say %q", what, err, text)
		}
	}
}

// Without a cwd asked for, a user whose home does not exist (nobody's /nonexistent) or cannot be
// entered starts in "/", as login(1) and docker exec do; the same cwd asked for is refused.
func TestAHomeThatCannotBeUsedIsReplacedByTheRootDirectoryUnlessAskedFor(t *testing.T) {
	c := newChecks(t)
	passwd := "root:x:0:0:root:/root:/bin/sh\n" +
		"tester:x:4242:4242:Tester:" + filepath.Join(c.base, "home") + ":/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n" +
		"locked:x:4243:4243:Locked:" + filepath.Join(c.base, "private") + ":/bin/sh\n"
	writeFile(t, filepath.Join(c.base, "etc", "passwd"), passwd, 0o644)
	mkdir(t, filepath.Join(c.base, "private"), 0o700)
	for _, user := range []string{"nobody", "locked"} {
		spec, err := c.spec(user, &rpc.ProcessConfig{Cmd: "/bin/pwd"})
		if err != nil {
			t.Fatalf("%s without a cwd: %v", user, err)
		}
		if spec.Dir != "/" {
			t.Errorf("%s without a cwd starts in %q, want /", user, spec.Dir)
		}
		if got := strings.TrimSpace(runs(t, spec)); got != "/" {
			t.Errorf("%s's process runs in %q, want /", user, got)
		}
	}
	missing := "/nonexistent"
	_, err := c.spec("nobody", &rpc.ProcessConfig{Cmd: "/bin/pwd", Cwd: &missing})
	refused(t, "a missing cwd asked for", err, "not an existing directory")
	// A home the user may enter stays the default.
	spec, err := c.spec("tester", &rpc.ProcessConfig{Cmd: "/bin/pwd"})
	if err != nil || spec.Dir != filepath.Join(c.base, "home") {
		t.Fatalf("tester without a cwd: %+v, %v", spec.Dir, err)
	}
}

// The process chdirs as the user: a cwd inside a directory only root may enter is refused before
// the start for another user, saying the user may not reach it (not that it does not exist), and
// accepted for root, as before.
func TestACwdTheUserCannotReachIsRefusedForTheUserAndAcceptedForRoot(t *testing.T) {
	c := newChecks(t)
	private := filepath.Join(c.base, "private")
	inside := filepath.Join(private, "inside")
	mkdir(t, private, 0o700)
	mkdir(t, inside, 0o755)
	for _, cwd := range []string{inside, private} {
		_, err := c.spec("tester", &rpc.ProcessConfig{Cmd: "/bin/true", Cwd: &cwd})
		refused(t, cwd, err, cwd, "permission denied", "tester")
		if strings.Contains(err.Error(), "not an existing directory") {
			t.Errorf("%s: %v, want permission denied, not missing", cwd, err)
		}
		spec, err := c.spec("", &rpc.ProcessConfig{Cmd: "/bin/true", Cwd: &cwd})
		if err != nil || spec.Dir != cwd {
			t.Fatalf("%s as root: %+v, %v", cwd, spec, err)
		}
		runs(t, spec)
	}
	// Missing stays missing, for either.
	missing := filepath.Join(c.base, "missing")
	for _, user := range []string{"tester", ""} {
		_, err := c.spec(user, &rpc.ProcessConfig{Cmd: "/bin/true", Cwd: &missing})
		refused(t, "a missing cwd as "+user, err, "not an existing directory", "no such file or directory")
	}
	// A directory the user may enter is the user's cwd.
	spec, err := c.spec("tester", &rpc.ProcessConfig{Cmd: "/bin/pwd", Cwd: &c.base})
	if err != nil {
		t.Fatal(err)
	}
	if got := runs(t, spec); got != c.base+"\n" {
		t.Fatalf("pwd as the tester: %q", got)
	}
}

// The PATH lookup goes on, as the user's shell would, past a directory the user cannot search
// and past a file the user may not execute (one only root's group may run); root still gets the
// first of PATH, as before.
func TestThePathLookupChoosesWhatTheUserMayRun(t *testing.T) {
	c := newChecks(t)
	locked := filepath.Join(c.base, "locked")      // root's, 0700: the tester cannot search it
	rootOnly := filepath.Join(c.base, "root-only") // a tool only its owner, root, may run
	grouped := filepath.Join(c.base, "grouped")    // a tool group 5000 may run: the tester's supplementary group
	open := filepath.Join(c.base, "open")
	mkdir(t, locked, 0o755)
	program(t, locked, 0o755)
	mkdir(t, locked, 0o700)
	program(t, rootOnly, 0o744)
	program(t, grouped, 0o750)
	if err := os.Chown(filepath.Join(grouped, "tool"), 0, 5000); err != nil {
		t.Fatal(err)
	}
	program(t, open, 0o755)
	cases := []struct{ path, tester, root string }{
		{locked + ":" + open, open, locked},
		{rootOnly + ":" + open, open, rootOnly},
		{rootOnly + ":" + grouped + ":" + open, grouped, rootOnly},
	}
	for _, each := range cases {
		config := &rpc.ProcessConfig{Cmd: "tool", Envs: map[string]string{"PATH": each.path}}
		for user, want := range map[string]string{"tester": each.tester, "": each.root} {
			spec, err := c.spec(user, config)
			if err != nil {
				t.Fatalf("PATH %s as %q: %v", each.path, user, err)
			}
			if spec.Path != filepath.Join(want, "tool") {
				t.Errorf("PATH %s as %q: chose %s, want %s", each.path, user, spec.Path, filepath.Join(want, "tool"))
				continue
			}
			if got := runs(t, spec); got != want+"\n" {
				t.Errorf("PATH %s as %q: ran %q", each.path, user, got)
			}
		}
	}
	// Nothing the tester may run: not found, saying what was passed over and why.
	_, err := c.spec("tester", &rpc.ProcessConfig{Cmd: "tool", Envs: map[string]string{"PATH": locked + ":" + rootOnly}})
	refused(t, "no tool the tester may run", err, "not found", "permission denied", filepath.Join(locked, "tool"), filepath.Join(rootOnly, "tool"))
	// Named by its path, the file is the tester's to run or not.
	_, err = c.spec("tester", &rpc.ProcessConfig{Cmd: filepath.Join(rootOnly, "tool")})
	refused(t, "root's tool by its path", err, "not executable", "permission denied")
	_, err = c.spec("tester", &rpc.ProcessConfig{Cmd: filepath.Join(locked, "tool")})
	refused(t, "a tool in root's directory by its path", err, "not found", "permission denied")
	if _, err := c.spec("", &rpc.ProcessConfig{Cmd: filepath.Join(locked, "tool")}); err != nil {
		t.Fatalf("root's tool by its path as root: %v", err)
	}
}

// A start the sandbox has no room for (fork: EAGAIN at its pids limit, ENOMEM) is not the request's
// fault: ResourceExhausted, saying what is exhausted; a program that cannot be run stays InvalidArgument.
func TestAStartWithoutRoomIsResourceExhausted(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EAGAIN, syscall.ENOMEM} {
		err := startError("/bin/bash", &os.PathError{Op: "fork/exec", Path: "/bin/bash", Err: errno})
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "out of processes (its pids limit) or memory") {
			t.Fatalf("%v: %v (%v)", errno, err, connect.CodeOf(err))
		}
	}
	err := startError("/nope", &os.PathError{Op: "fork/exec", Path: "/nope", Err: syscall.ENOENT})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || err.Error() != "invalid_argument: cannot start /nope: fork/exec /nope: no such file or directory" {
		t.Fatalf("ENOENT: %v (%v)", err, connect.CodeOf(err))
	}
}
