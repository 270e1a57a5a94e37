package files

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"fast-sandbox.io/envd/internal/identity"
	"fast-sandbox.io/envd/internal/paths"
	"fast-sandbox.io/envd/internal/users"
)

// received is one file of an upload once its content has all arrived: a new file, already
// written, or the content for an existing file, staged beside it until commit copies it in.
// Several files of one multipart upload are all received before any existing one is replaced, so
// an upload that fails on the way changes none of them.
type received struct {
	written WrittenFile
	user    *users.User
	// created is set for a new file: discard removes it.
	created bool
	// staging holds the content of an existing file at written.Path until commit or discard.
	staging *os.File
	// mode, when the upload gives one (?mode=), is the file's permission bits once written: a new
	// file is created with them, an existing one gets them at commit.
	mode *os.FileMode
}

// as runs operation with user's identity (identity.As): every file an upload opens, creates or
// removes is opened, created or removed as the user, so that the kernel applies the user's
// permissions to every component of the path — symlinks the sandbox's code planted included — and
// a new file is the user's from the start. Only the copies of the content, through files already
// open, run outside it.
func as(user *users.User, operation func() *httpError) *httpError {
	var failure *httpError
	if err := identity.As(user, func() { failure = operation() }); err != nil {
		return fail(statusOf(err), "%v", err)
	}
	return failure
}

// receive writes content to a new file, creating its directories (as the user: they are the
// user's), or stages it for an existing one the user may write (commit replaces it). An upload
// that fails (too large, corrupt, its client gone) leaves no trace: a new file is removed, and an
// existing one is not touched — the upload is staged beside it first, and copied into it only once
// it all arrived. Copied, not renamed over it: it stays the same file, as E2B's envd writes it in
// place, so hard links and bind mounts see the new content and a watch sees a write of its name.
func (h *Handler) receive(requested string, content io.Reader, user *users.User, mode *os.FileMode) (*received, *httpError) {
	path, failure := h.resolve(requested, user)
	if failure != nil {
		return nil, failure
	}
	r := &received{written: WrittenFile{Name: filepath.Base(path), Type: "file", Path: path}, user: user, mode: mode}
	var file *os.File
	failure = as(user, func() *httpError {
		if err := paths.EnsureDir(filepath.Dir(path), user.UID, user.GID); err != nil {
			return fail(statusOf(err), "making the directory of %s: %v", path, err)
		}
		if info, err := os.Stat(path); err == nil {
			if info.IsDir() {
				return fail(http.StatusBadRequest, "%s is a directory: give the path of a file", path)
			}
			if !info.Mode().IsRegular() {
				return fail(http.StatusBadRequest, "%s is %s: only regular files are read and written", path, kindOf(info.Mode()))
			}
		}
		// Created with the requested bits (the umask can only take some away: never more open than
		// asked, not even for a moment), then given them exactly.
		perm := os.FileMode(0o644)
		if mode != nil {
			perm = *mode
		}
		var err error
		file, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		switch {
		case err == nil:
			r.created = true
			if h.givesOwnership(user) {
				if err := file.Chown(int(user.UID), int(user.GID)); err != nil {
					file.Close()
					return fail(statusOf(err), "giving %s to %s: %v", path, user.Name, err)
				}
			}
			if mode != nil { // exactly these bits, whatever the daemon's umask
				if err := file.Chmod(*mode); err != nil {
					file.Close()
					return fail(statusOf(err), "setting the mode of %s to %#o: %v", path, uint32(*mode), err)
				}
			}
			return nil
		case errors.Is(err, os.ErrExist): // a file, or a symlink (a dangling one too) the write follows
			// Refused now, not once the whole upload arrived, when the user may not write it, or may
			// not give it the mode asked for.
			if existing, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				failure := checkModeChange(existing, path, mode, user)
				existing.Close()
				if failure != nil {
					return failure
				}
			} else if !errors.Is(err, os.ErrNotExist) { // a dangling symlink: commit creates its target
				return fail(statusOf(err), "opening %s: %v", path, err)
			}
			if r.staging, err = stage(filepath.Dir(paths.Real(path))); err != nil {
				return fail(statusOf(err), "staging the upload for %s: %v", path, err)
			}
			return nil
		default:
			return fail(statusOf(err), "opening %s: %v", path, err)
		}
	})
	if failure != nil {
		r.discard()
		return nil, failure
	}
	if file != nil {
		if failure := fill(file, path, content); failure != nil {
			r.discard()
			return nil, failure
		}
		return r, nil
	}
	if _, err := io.Copy(r.staging, content); err != nil {
		r.discard()
		return nil, uploadCopyFailure(path, err)
	}
	return r, nil
}

// checkModeChange refuses, before any of the upload is read, a mode for an existing file that the
// request's user may not give it: a change of mode is its owner's (or root's) alone. The same mode
// is no change, whoever asks.
func checkModeChange(file *os.File, path string, mode *os.FileMode, user *users.User) *httpError {
	if mode == nil {
		return nil
	}
	info, err := file.Stat()
	if err != nil {
		return fail(statusOf(err), "opening %s: %v", path, err)
	}
	if info.Mode().Perm() == *mode {
		return nil
	}
	acting := uint32(syscall.Geteuid())
	if identity.Switches(user) {
		acting = user.UID
	}
	if stat, ok := info.Sys().(*syscall.Stat_t); ok && acting != 0 && stat.Uid != acting {
		return fail(http.StatusForbidden, "setting the mode of %s to %#o: only its owner may change it (it is %#o); write it without a mode to keep that", path, uint32(*mode), uint32(info.Mode().Perm()))
	}
	return nil
}

// givesOwnership tells whether a file written for user is given to the user afterwards, as E2B's
// envd gives it to the uploading user: only for a request the daemon runs as root (as root's user,
// whose group may be another). A request as another user creates its files as that user already,
// and must never take over a file of someone else's.
func (h *Handler) givesOwnership(user *users.User) bool {
	return h.Auth.UID == 0 && !identity.Switches(user)
}

// discard undoes what receive did: a new file is removed, staged content dropped.
func (r *received) discard() {
	switch {
	case r.created:
		_ = as(r.user, func() *httpError {
			_ = os.Remove(r.written.Path)
			return nil
		})
		r.created = false
	case r.staging != nil:
		discardStaging(r.staging, r.user)
		r.staging = nil
	}
}

func discardStaging(staging *os.File, user *users.User) {
	staging.Close()
	_ = as(user, func() *httpError {
		_ = os.Remove(staging.Name())
		return nil
	})
}

// commit copies staged content into the existing file it replaces (nothing to do for a new
// file). The file is opened as the user — a symlink to where the user may not write is refused —
// and it keeps its owner (only a root request gives it to root, as E2B's envd gives it to the
// uploading user). It is checked for room before it is truncated, so that a refused change of
// owner or a disk without the room leaves it as it was.
func (h *Handler) commit(r *received) *httpError {
	if r.staging == nil {
		return nil
	}
	staging, path := r.staging, r.written.Path
	defer func() {
		discardStaging(staging, r.user)
		r.staging = nil
	}()
	staged, err := staging.Stat()
	if err == nil {
		_, err = staging.Seek(0, io.SeekStart)
	}
	if err != nil {
		return fail(statusOf(err), "reading back the upload for %s: %v", path, err)
	}
	// Without waiting: a FIFO swapped in meanwhile fails (or opens, and is refused below). Not
	// truncated yet: that waits until nothing else can fail first.
	var file *os.File
	if failure := as(r.user, func() *httpError {
		if file, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|syscall.O_NONBLOCK, 0o644); err != nil {
			return fail(statusOf(err), "opening %s: %v", path, err)
		}
		return nil
	}); failure != nil {
		return failure
	}
	info, err := file.Stat()
	if err != nil || !info.Mode().IsRegular() {
		file.Close()
		if err != nil {
			return fail(statusOf(err), "opening %s: %v", path, err)
		}
		return fail(http.StatusBadRequest, "%s is %s: only regular files are read and written", path, kindOf(info.Mode()))
	}
	if h.givesOwnership(r.user) {
		if err := file.Chown(int(r.user.UID), int(r.user.GID)); err != nil {
			file.Close()
			return fail(statusOf(err), "giving %s to %s: %v", path, r.user.Name, err)
		}
	}
	if free, needed, known := room(file, info, staged.Size()); known && free < needed {
		file.Close()
		return fail(http.StatusInsufficientStorage, "writing %s: the sandbox's disk is full: the upload needs %d bytes, %d are free; the file is left as it was", path, needed, free)
	}
	// As the user, before the content is touched (receive already refused a user who may not):
	// only the file's owner (or root's request) may change its mode.
	if r.mode != nil && info.Mode().Perm() != *r.mode {
		if failure := as(r.user, func() *httpError {
			if err := file.Chmod(*r.mode); err != nil {
				return fail(statusOf(err), "setting the mode of %s to %#o: %v; the file is left as it was", path, uint32(*r.mode), err)
			}
			return nil
		}); failure != nil {
			file.Close()
			return failure
		}
	}
	if err := file.Truncate(0); err != nil {
		file.Close()
		return fail(statusOf(err), "writing %s: %v", path, err)
	}
	return fill(file, path, staging)
}

// room estimates the space the file system of file has for size bytes written into it once it
// is truncated: what is free (to the daemon: root may use the blocks reserved for it) plus the
// blocks the truncation frees. Only an estimate — another writer, a quota or shared extents can
// still make the copy fail, and then the file is lost, as E2B's envd loses it — but it keeps a
// disk that plainly lacks the room from costing the file.
func room(file *os.File, info os.FileInfo, size int64) (free, needed int64, known bool) {
	var fs syscall.Statfs_t
	if err := syscall.Fstatfs(int(file.Fd()), &fs); err != nil || fs.Bsize <= 0 {
		return 0, 0, false
	}
	blocks := fs.Bavail
	if os.Geteuid() == 0 {
		blocks = fs.Bfree
	}
	blockSize := int64(fs.Bsize)
	free = int64(blocks) * blockSize
	if stat, ok := info.Sys().(*syscall.Stat_t); ok {
		free += int64(stat.Blocks) * 512
	}
	needed = (size + blockSize - 1) / blockSize * blockSize
	return free, needed, true
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

// fill writes content into file and closes it.
func fill(file *os.File, path string, content io.Reader) *httpError {
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
