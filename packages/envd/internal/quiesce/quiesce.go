// Package quiesce lets the agent take a gVisor checkpoint of a sandbox whose daemon runs.
//
// gVisor's runsc 20221219 refuses to save a TCP socket that is connected, in TIME-WAIT, or that a
// process waits on through epoll ("endpoint still has waiters upon save"), and Go's runtime waits
// on every socket through epoll: a sandbox whose daemon listens cannot be checkpointed. So the agent
// asks the daemon to quiesce first — close its listener and every connection, keep its processes,
// watchers and state — checkpoints, and asks it to serve again once the sandbox (or a copy of it)
// is restored, in its new network namespace.
//
// The agent reaches the daemon through `fsb-envd -control quiesce|resume`, which it runs inside the
// sandbox (containerd's exec): that process signals the daemon (SIGUSR1 quiesce, SIGUSR2 resume)
// by the pid the daemon records in its state directory, and waits until the daemon records the
// new state there (`envd.state`: `serving` or `quiesced`). A restored copy keeps the process ids
// of its checkpoint, so the same pid reaches the copy's daemon.
//
// A current runsc gives a restored copy the hostname of its own spec. A quiesced daemon watches
// its hostname (HostnameWatch) and serves again by itself as soon as it changes — a copy then
// needs nothing from the agent — and says so before it records `quiesced`: `envd.resume-watch`
// holds `hostname`. A sandbox restored under its own name (in place) still needs the resume.
package quiesce

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultStateDir is the helper's run directory in every sandbox (see oci-spec.ts of the agent).
const DefaultStateDir = "/.fast-sandbox/run"

// The daemon's states, as recorded in StateFile.
const (
	Serving  = "serving"
	Quiesced = "quiesced"
)

const (
	// PidFile holds the daemon's process id, in decimal.
	PidFile = "envd.pid"
	// StateFile holds Serving or Quiesced and a newline.
	StateFile = "envd.state"
	// ResumeWatchFile holds what a quiesced daemon resumes on by itself ("hostname") and a newline.
	ResumeWatchFile = "envd.resume-watch"
)

// HostnameWatchInterval is how often a quiesced daemon reads its hostname: a copy restored under
// its own name serves within about that long, and a daemon that waits to be restored wakes 100
// times a second, not 1000 (a quiesced sandbox may wait, idle, for a long time).
const HostnameWatchInterval = 10 * time.Millisecond

// Signals the daemon understands.
var (
	QuiesceSignal = syscall.SIGUSR1
	ResumeSignal  = syscall.SIGUSR2
)

// Recorder writes the daemon's pid and state into a directory; a zero Recorder (no directory)
// records nothing, for a daemon run outside a sandbox.
type Recorder struct{ Dir string }

// RecordPid writes the daemon's pid; errors are returned for the caller to log, they are not fatal.
func (r Recorder) RecordPid() error {
	if r.Dir == "" {
		return nil
	}
	return writeAtomically(filepath.Join(r.Dir, PidFile), strconv.Itoa(os.Getpid())+"\n")
}

// RecordState writes Serving or Quiesced.
func (r Recorder) RecordState(state string) error {
	if r.Dir == "" {
		return nil
	}
	return writeAtomically(filepath.Join(r.Dir, StateFile), state+"\n")
}

// RecordResumeWatch writes what the quiesced daemon resumes on by itself.
func (r Recorder) RecordResumeWatch(what string) error {
	if r.Dir == "" {
		return nil
	}
	return writeAtomically(filepath.Join(r.Dir, ResumeWatchFile), what+"\n")
}

// HostnameWatch tells whether the hostname is still the one it started with: a change while the
// daemon is quiesced means the sandbox was restored as a copy with a name of its own.
type HostnameWatch struct {
	at   string
	read func() (string, error)
}

// NewHostnameWatch starts watching the sandbox's hostname (read with read; nil: os.Hostname).
func NewHostnameWatch(read func() (string, error)) HostnameWatch {
	if read == nil {
		read = os.Hostname
	}
	at, err := read()
	if err != nil {
		at = ""
	}
	return HostnameWatch{at: at, read: read}
}

// Changed reports whether the hostname now differs from the one at the start (false when either
// could not be read).
func (w HostnameWatch) Changed() bool {
	if w.at == "" {
		return false
	}
	now, err := w.read()
	return err == nil && now != "" && now != w.at
}

// StateDirIfPresent returns dir when it is a directory, else "" (nothing is recorded).
func StateDirIfPresent(dir string) string {
	if info, err := os.Stat(dir); err == nil && info.IsDir() {
		return dir
	}
	return ""
}

// Control asks the daemon recorded in dir to quiesce ("quiesce") or serve again ("resume"), and
// waits up to timeout for it to record that state.
func Control(dir, action string, timeout time.Duration) error {
	var signal syscall.Signal
	var want string
	switch action {
	case "quiesce":
		signal, want = QuiesceSignal, Quiesced
	case "resume":
		signal, want = ResumeSignal, Serving
	default:
		return fmt.Errorf("-control %q: use quiesce or resume", action)
	}
	text, err := os.ReadFile(filepath.Join(dir, PidFile))
	if err != nil {
		return fmt.Errorf("no daemon recorded in %s: %w", dir, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(text)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("%s holds no pid: %q", filepath.Join(dir, PidFile), string(text))
	}
	if current, _ := readState(dir); current == want {
		return nil
	}
	if err := syscall.Kill(pid, signal); err != nil {
		return fmt.Errorf("signal the daemon (pid %d): %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		current, err := readState(dir)
		if err == nil && current == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the daemon (pid %d) did not record %q within %s (it records %q)", pid, want, timeout, current)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func readState(dir string) (string, error) {
	text, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(text)), nil
}

// SetHostname sets the sandbox's hostname (its UTS namespace's): a restored copy gets its own name
// instead of its checkpoint's. Needs CAP_SYS_ADMIN, which the agent gives this exec alone.
func SetHostname(name string) error {
	if name == "" {
		return errors.New("-hostname: give a name")
	}
	return syscall.Sethostname([]byte(name))
}

func writeAtomically(path, content string) error {
	temporary := path + ".tmp"
	if err := os.WriteFile(temporary, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(temporary, path)
}
