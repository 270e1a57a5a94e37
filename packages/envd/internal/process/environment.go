package process

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

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

// bashFallback: E2B's SDKs run every command as `/bin/bash -l -c …`; an image without bash (our
// busybox base image) runs it with /bin/sh, which takes the same flags. A deviation from E2B,
// which fails there.
const bashPath, shPath = "/bin/bash", "/bin/sh"

// LookPath finds the executable of command like a shell: a name with a slash as it is (relative to
// cwd), else the first executable file of that name in the environment's PATH.
func LookPath(command string, environment []string, cwd string) (string, error) {
	if command == "" {
		return "", fmt.Errorf("%w: the command (cmd) is empty", ErrCommandNotFound)
	}
	if strings.Contains(command, "/") {
		path := command
		if !filepath.IsAbs(path) {
			path = filepath.Join(cwd, path)
		}
		if path == bashPath && !isExecutable(path) && isExecutable(shPath) {
			return shPath, nil
		}
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrCommandNotFound, command, err)
		}
		return path, nil
	}
	search := DefaultPath
	for _, entry := range environment {
		if value, found := strings.CutPrefix(entry, "PATH="); found {
			search = value
		}
	}
	for _, dir := range filepath.SplitList(search) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		if candidate := filepath.Join(dir, command); isExecutable(candidate) {
			return candidate, nil
		}
	}
	return "", fmt.Errorf("%w: no executable file %q in PATH %s", ErrCommandNotFound, command, search)
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}
