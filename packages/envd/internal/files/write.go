package files

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"fast-sandbox.io/envd/internal/paths"
	"fast-sandbox.io/envd/internal/users"
)

// writeFile writes content to the file, creating its directories, owned by user (as E2B's envd
// leaves it, an existing file included). An upload that fails (too large, corrupt, its client
// gone) leaves no trace: a new file is removed, and an existing one is not touched — the upload is
// staged beside it first, and copied into it only once it all arrived. Copied, not renamed over
// it: it stays the same file, as E2B's envd writes it in place, so hard links and bind mounts see
// the new content and a watch sees a write of its name.
func (h *Handler) writeFile(requested string, content io.Reader, user *users.User) (WrittenFile, *httpError) {
	path, failure := h.resolve(requested, user)
	if failure != nil {
		return WrittenFile{}, failure
	}
	if err := paths.EnsureDir(filepath.Dir(path), user.UID, user.GID); err != nil {
		return WrittenFile{}, fail(statusOf(err), "making the directory of %s: %v", path, err)
	}
	if info, err := os.Stat(path); err == nil {
		if info.IsDir() {
			return WrittenFile{}, fail(http.StatusBadRequest, "%s is a directory: give the path of a file", path)
		}
		if !info.Mode().IsRegular() {
			return WrittenFile{}, fail(http.StatusBadRequest, "%s is not a regular file (%s)", path, info.Mode().Type())
		}
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	switch {
	case err == nil:
		if failure := h.fill(file, path, content, user); failure != nil {
			_ = os.Remove(path)
			return WrittenFile{}, failure
		}
	case errors.Is(err, os.ErrExist): // a file, or a symlink (a dangling one too) the write follows
		if failure := h.replace(path, content, user); failure != nil {
			return WrittenFile{}, failure
		}
	default:
		return WrittenFile{}, fail(statusOf(err), "opening %s: %v", path, err)
	}
	return WrittenFile{Name: filepath.Base(path), Type: "file", Path: path}, nil
}

// replace stages content, then copies it into the file at path.
func (h *Handler) replace(path string, content io.Reader, user *users.User) *httpError {
	staging, err := stage(filepath.Dir(paths.Real(path)))
	if err != nil {
		return fail(statusOf(err), "staging the upload for %s: %v", path, err)
	}
	defer os.Remove(staging.Name())
	defer staging.Close()
	if _, err := io.Copy(staging, content); err != nil {
		return uploadCopyFailure(path, err)
	}
	if _, err := staging.Seek(0, io.SeekStart); err != nil {
		return fail(statusOf(err), "reading back the upload for %s: %v", path, err)
	}
	// Without waiting: a FIFO swapped in meanwhile fails (or opens, and is refused below).
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NONBLOCK, 0o644)
	if err != nil {
		return fail(statusOf(err), "opening %s: %v", path, err)
	}
	if info, err := file.Stat(); err != nil || !info.Mode().IsRegular() {
		file.Close()
		if err != nil {
			return fail(statusOf(err), "opening %s: %v", path, err)
		}
		return fail(http.StatusBadRequest, "%s is not a regular file (%s)", path, info.Mode().Type())
	}
	return h.fill(file, path, staging, user)
}

// stage creates the file an upload waits in: beside the file it replaces (the same file system:
// its space, a fast copy), else — a directory it cannot write, around a file it can — in the
// temporary directory. Listings and watches leave it out (paths.UploadStagingPrefix).
func stage(dir string) (*os.File, error) {
	staging, err := os.CreateTemp(dir, paths.UploadStagingPrefix+"*")
	if err == nil || !(errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS)) {
		return staging, err
	}
	if fallback, fallbackErr := os.CreateTemp("", paths.UploadStagingPrefix+"*"); fallbackErr == nil {
		return fallback, nil
	}
	return nil, err
}

// fill gives file to user (when the daemon may), writes content into it and closes it.
func (h *Handler) fill(file *os.File, path string, content io.Reader, user *users.User) *httpError {
	if h.Auth.UID == 0 {
		if err := file.Chown(int(user.UID), int(user.GID)); err != nil {
			file.Close()
			return fail(statusOf(err), "giving %s to %s: %v", path, user.Name, err)
		}
	}
	_, copyErr := io.Copy(file, content)
	closeErr := file.Close()
	switch {
	case copyErr != nil:
		return uploadCopyFailure(path, copyErr)
	case closeErr != nil:
		return fail(statusOf(closeErr), "writing %s: %v", path, closeErr)
	}
	return nil
}

// uploadCopyFailure tells a failed write of path (the disk) from a failed read of the upload.
func uploadCopyFailure(path string, err error) *httpError {
	var pathError *os.PathError
	switch {
	case errors.Is(err, errTooLarge) || isMaxBytes(err):
		return &httpError{status: http.StatusRequestEntityTooLarge, err: err}
	case statusOf(err) == http.StatusInsufficientStorage:
		return fail(http.StatusInsufficientStorage, "writing %s: the sandbox's disk is full: %v", path, err)
	case errors.As(err, &pathError):
		return fail(statusOf(err), "writing %s: %v", path, err)
	default:
		return fail(http.StatusBadRequest, "reading the upload for %s: %v", path, err)
	}
}
