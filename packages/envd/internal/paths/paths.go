// Package paths turns the paths of requests into absolute ones and keeps requests away from the
// daemon's own files (/.fast-sandbox: the helper, the daemon and the run directory), however the
// path is spelled: "..", symlinks (also dangling ones a write would follow) and /proc magic links
// are resolved before the check.
//
// The check and the operation that follows are two steps: a process of the sandbox that swaps a
// directory for a symlink between them could still redirect the operation. Processes of the
// sandbox can reach those files directly anyway (it is their mount namespace); the guard keeps
// the API itself from being the way in. What protects everything else from a redirect is that the
// operations of a user's request run as that user (package identity): a symlink leads only where
// the user could go.
package paths

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

var (
	// ErrEmpty is returned for an empty path.
	ErrEmpty = errors.New("the path is empty: give an absolute path, or one relative to the user's home")
	// ErrProtected is returned for a path that leads into the daemon's own directory.
	ErrProtected = errors.New("the path leads into Fast Sandbox's own directory, which the API does not touch")
)

// maxSymlinks is how many symlinks one resolution follows, like the kernel's ELOOP limit.
const maxSymlinks = 40

// Absolute resolves a requested path: "~" and "~/x" against home, other relative paths against
// base (the default working directory, or home when there is none); the result is cleaned.
func Absolute(requested, home, base string) (string, error) {
	if requested == "" {
		return "", ErrEmpty
	}
	if base == "" {
		base = home
	}
	switch {
	case requested == "~":
		requested = home
	case strings.HasPrefix(requested, "~/"):
		requested = filepath.Join(home, requested[2:])
	case !filepath.IsAbs(requested):
		requested = filepath.Join(base, requested)
	}
	return filepath.Clean(requested), nil
}

// Guard rejects paths that lead into protected directories.
type Guard struct {
	protected []string
}

// NewGuard protects each directory (absolute); their own symlinks are resolved once here.
func NewGuard(protected ...string) Guard {
	var guard Guard
	for _, dir := range protected {
		if dir == "" {
			continue
		}
		clean := filepath.Clean(dir)
		guard.protected = append(guard.protected, clean)
		if real := Real(clean); real != clean {
			guard.protected = append(guard.protected, real)
		}
	}
	return guard
}

// Within reports whether path is dir or below it (both absolute and clean).
func Within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/") || dir == "/"
}

// Check returns ErrProtected when path (absolute, clean) or what it resolves to is protected.
func (g Guard) Check(path string) error {
	if len(g.protected) == 0 {
		return nil
	}
	real := Real(path)
	for _, dir := range g.protected {
		if Within(path, dir) || Within(real, dir) {
			return fmt.Errorf("%w (%s)", ErrProtected, path)
		}
	}
	return nil
}

// UploadStagingPrefix begins the name of the file an upload waits in (beside the file it will
// replace) until it has all arrived.
const UploadStagingPrefix = ".fsb-upload-"

// Hidden tells listings and watches to leave out an entry: it is protected itself, or an upload's
// staging file.
func (g Guard) Hidden(path string) bool {
	if strings.HasPrefix(filepath.Base(path), UploadStagingPrefix) {
		return true
	}
	for _, dir := range g.protected {
		if Within(path, dir) {
			return true
		}
	}
	return false
}

// Real is where the kernel would take an absolute path: every symlink on the way followed (the
// last component's too), ".." applied to the resolved parent. The part from the first component
// that does not exist on is kept as written.
func Real(path string) string {
	pending := components(path)
	resolved := "/"
	followed := 0
	for len(pending) > 0 {
		part := pending[0]
		pending = pending[1:]
		if part == ".." {
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, part)
		info, err := os.Lstat(next)
		if err != nil {
			return filepath.Join(append([]string{next}, pending...)...)
		}
		if info.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		target, err := os.Readlink(next)
		followed++
		if err != nil || followed > maxSymlinks {
			return filepath.Join(append([]string{next}, pending...)...)
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		pending = append(components(target), pending...)
	}
	return resolved
}

func components(path string) []string {
	var parts []string
	for _, part := range strings.Split(path, "/") {
		if part != "" && part != "." {
			parts = append(parts, part)
		}
	}
	return parts
}

// EnsureDir creates dir and its missing parents (mode 0755), each new one owned by uid:gid, as a
// user's `mkdir -p` would leave them. A user's request calls it as that user (identity.As), so that
// it makes directories only where the user may.
func EnsureDir(dir string, uid, gid uint32) error {
	info, err := os.Stat(dir)
	if err == nil {
		if !info.IsDir() {
			return fmt.Errorf("%s exists and is not a directory: %w", dir, syscall.ENOTDIR)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := EnsureDir(parent, uid, gid); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil // made meanwhile by someone else
		}
		return err
	}
	return os.Lchown(dir, int(uid), int(gid))
}
