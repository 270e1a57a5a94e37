package process

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"fast-sandbox.io/envd/internal/users"
)

// DefaultPath is the PATH of processes whose environment has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Environment is a process's environment, later sources winning: the sandbox's own (what the
// daemon inherited), the variables set through /init, the user's HOME/USER/LOGNAME, PWD, a
// default PATH (and TERM in a PTY) when missing, then the request's own variables.
func Environment(sandbox []string, initVars map[string]string, user *users.User, cwd string, terminal bool, request map[string]string) []string {
	merged := map[string]string{}
	for _, entry := range sandbox {
		if name, value, found := strings.Cut(entry, "="); found && name != "" {
			merged[name] = value
		}
	}
	maps.Copy(merged, initVars)
	merged["HOME"] = user.Home
	merged["USER"] = user.Name
	merged["LOGNAME"] = user.Name
	merged["PWD"] = cwd
	if merged["PATH"] == "" {
		merged["PATH"] = DefaultPath
	}
	if terminal && merged["TERM"] == "" {
		merged["TERM"] = "xterm-256color"
	}
	maps.Copy(merged, request)
	environment := make([]string, 0, len(merged))
	for _, name := range slices.Sorted(maps.Keys(merged)) {
		environment = append(environment, name+"="+merged[name])
	}
	return environment
}

// ErrCommandNotFound is a command that is not an executable file.
var ErrCommandNotFound = errors.New("command not found")

// ErrCommandNotExecutable is a command named by its path that the caller may not execute.
var ErrCommandNotExecutable = errors.New("command not executable")

// bashFallback: E2B's SDKs run every command as `/bin/bash -l -c …`; an image without bash (our
// busybox base image) runs it with /bin/sh, which takes the same flags. A deviation from E2B,
// which fails there.
const bashPath, shPath = "/bin/bash", "/bin/sh"

// LookPath finds the executable of command like a shell: a name with a slash as it is (relative to
// cwd), else the first executable file of that name in the environment's PATH.
//
// Every check is made with the calling thread's identity: the service calls it as the request's
// user (identity.As), so that the lookup finds what that user's shell would. A PATH directory the
// user cannot search, or a file the user may not execute, is passed over for the next entry,
// where a lookup made as root would choose it and the start would then fail as the user.
func LookPath(command string, environment []string, cwd string) (string, error) {
	if command == "" {
		return "", fmt.Errorf("%w: the command (cmd) is empty", ErrCommandNotFound)
	}
	if strings.Contains(command, "/") {
		path := command
		if !filepath.IsAbs(path) {
			path = filepath.Join(cwd, path)
		}
		if path == bashPath && executable(path) != nil && executable(shPath) == nil {
			return shPath, nil
		}
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrCommandNotFound, command, err)
		}
		if err := executable(path); err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrCommandNotExecutable, command, err)
		}
		return path, nil
	}
	search := DefaultPath
	for _, entry := range environment {
		if value, found := strings.CutPrefix(entry, "PATH="); found {
			search = value
		}
	}
	// What was there but not for the caller, to say why nothing was found (a shell would say
	// "Permission denied" too).
	var refused []string
	for _, dir := range filepath.SplitList(search) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		candidate := filepath.Join(dir, command)
		err := executable(candidate)
		if err == nil {
			return candidate, nil
		}
		if errors.Is(err, os.ErrPermission) {
			refused = append(refused, err.Error())
		}
	}
	if len(refused) > 0 {
		return "", fmt.Errorf("%w: no executable file %q in PATH %s (passed over: %s)", ErrCommandNotFound, command, search, strings.Join(refused, "; "))
	}
	return "", fmt.Errorf("%w: no executable file %q in PATH %s", ErrCommandNotFound, command, search)
}

// AT_FDCWD, X_OK and AT_EACCESS of faccessat(2), which the syscall package does not export.
// AT_EACCESS checks with the effective ids — those identity.As gives the thread — not the real
// ones, which stay root's.
const (
	atFdcwd   = -0x64
	xOK       = 0x1
	atEAccess = 0x200
)

// executable is nil when path is a regular file the caller may execute, as the kernel decides it:
// the file's mode for the caller's effective uid, gid and groups (root: any execute bit), a noexec
// mount, and search permission on every directory on the way. Otherwise the error says why.
func executable(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return &os.PathError{Op: "exec", Path: path, Err: errors.New("not a regular file")}
	}
	if err := syscall.Faccessat(atFdcwd, path, xOK, atEAccess); err != nil {
		return &os.PathError{Op: "exec", Path: path, Err: err}
	}
	return nil
}
