package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"connectrpc.com/connect"

	rpc "fast-sandbox.io/envd/gen/filesystem"
	"fast-sandbox.io/envd/gen/filesystem/filesystemconnect"
	"fast-sandbox.io/envd/internal/auth"
	"fast-sandbox.io/envd/internal/identity"
	"fast-sandbox.io/envd/internal/paths"
	"fast-sandbox.io/envd/internal/state"
	"fast-sandbox.io/envd/internal/users"
)

// Service implements filesystem.Filesystem.
type Service struct {
	Auth     *auth.Authenticator
	State    *state.State
	Guard    paths.Guard
	Watchers *Watchers
	// MaxListEntries bounds what one ListDir answers. @default DefaultMaxListEntries
	MaxListEntries int
}

var _ filesystemconnect.FilesystemHandler = (*Service)(nil)

// resolve is the absolute path of a request's path field, for the calling user, checked by the guard.
func (s *Service) resolve(header http.Header, field, requested string) (string, *users.User, error) {
	user, err := s.Auth.Caller(header)
	if err != nil {
		return "", nil, err
	}
	path, err := paths.Absolute(requested, user.Home, s.State.DefaultWorkdir())
	if err != nil {
		return "", nil, rpcError(err, "%s", field)
	}
	if err := s.Guard.Check(path); err != nil {
		return "", nil, rpcError(err, "%s", field)
	}
	return path, user, nil
}

func (s *Service) names() *users.Names { return s.Auth.Users.Names() }

// as runs operation with user's identity (identity.As): every entry a request stats, lists, makes,
// moves or removes, it does as the user, so that the kernel applies the user's permissions to every
// component of the path — symlinks the sandbox's code planted included — and what it makes is the
// user's. Errors of operation are returned as they are (Connect errors already).
func as(user *users.User, operation func() error) error {
	var failure error
	if err := identity.As(user, func() { failure = operation() }); err != nil {
		return rpcError(err, "%s", "taking on the request's user")
	}
	return failure
}

func (s *Service) Stat(_ context.Context, request *connect.Request[rpc.StatRequest]) (*connect.Response[rpc.StatResponse], error) {
	path, user, err := s.resolve(request.Header(), "path", request.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	names := s.names()
	var entry *rpc.EntryInfo
	if err := as(user, func() error {
		if entry, err = Describe(path, names); err != nil {
			return rpcError(err, "stat %s", path)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.StatResponse{Entry: entry}), nil
}

func (s *Service) MakeDir(_ context.Context, request *connect.Request[rpc.MakeDirRequest]) (*connect.Response[rpc.MakeDirResponse], error) {
	path, user, err := s.resolve(request.Header(), "path", request.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	names := s.names()
	var entry *rpc.EntryInfo
	if err := as(user, func() error {
		if info, err := os.Stat(path); err == nil {
			// As E2B's envd answers: a directory that exists is AlreadyExists (the SDKs answer false), a
			// file in the way is InvalidArgument (the SDKs raise it).
			if !info.IsDir() {
				return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s already exists and is not a directory", path))
			}
			return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("%s already exists (a directory)", path))
		}
		if err := paths.EnsureDir(path, user.UID, user.GID); err != nil {
			return rpcError(err, "make directory %s", path)
		}
		if entry, err = Describe(path, names); err != nil {
			return rpcError(err, "stat %s", path)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.MakeDirResponse{Entry: entry}), nil
}

func (s *Service) Move(_ context.Context, request *connect.Request[rpc.MoveRequest]) (*connect.Response[rpc.MoveResponse], error) {
	source, user, err := s.resolve(request.Header(), "source", request.Msg.GetSource())
	if err != nil {
		return nil, err
	}
	destination, _, err := s.resolve(request.Header(), "destination", request.Msg.GetDestination())
	if err != nil {
		return nil, err
	}
	names := s.names()
	var entry *rpc.EntryInfo
	if err := as(user, func() error {
		info, err := os.Lstat(source)
		if err != nil {
			return rpcError(err, "move %s", source)
		}
		// Refused before anything is made: a copy into itself (the fallback below) would never end.
		realSource := paths.Real(source)
		realDestination := filepath.Join(paths.Real(filepath.Dir(destination)), filepath.Base(destination))
		if info.IsDir() && realDestination != realSource && paths.Within(realDestination, realSource) {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("move %s to %s: a directory cannot be moved into itself", source, destination))
		}
		if err := paths.EnsureDir(filepath.Dir(destination), user.UID, user.GID); err != nil {
			return rpcError(err, "make the destination's directory %s", filepath.Dir(destination))
		}
		if err := os.Rename(source, destination); err != nil {
			// Another file system (a mount, or an overlay that cannot rename a lower directory): copy, then remove.
			if !errors.Is(err, syscall.EXDEV) {
				return rpcError(err, "move %s to %s", source, destination)
			}
			if err := moveByCopy(source, realSource, destination, info); err != nil {
				return err
			}
		}
		if entry, err = Describe(destination, names); err != nil {
			return rpcError(err, "stat %s", destination)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.MoveResponse{Entry: entry}), nil
}

// moveByCopy moves source to destination across file systems as mv does, copying then removing,
// after checking what would make it stop halfway: a mount point at or below the source (the
// kernel refuses to remove one, EBUSY) is refused before anything is copied, and a copy that fails
// (a full disk) is removed again, leaving the source as it was. realSource is the source with its
// symlinks resolved, info its Lstat: a symlink is moved as itself, whatever its target holds.
func moveByCopy(source, realSource, destination string, info os.FileInfo) error {
	var mounts []string
	if info.Mode()&os.ModeSymlink == 0 {
		var err error
		if mounts, err = mountPointsWithin(realSource); err != nil {
			return rpcError(err, "move %s to %s: read the mount points", source, destination)
		}
	}
	if len(mounts) > 0 {
		what := fmt.Sprintf("%s is a mount point", mounts[0])
		if mounts[0] != realSource {
			what = fmt.Sprintf("it holds a mount point, %s", mounts[0])
		}
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("move %s to %s: %s, which cannot be moved; move what is in it instead", source, destination, what))
	}
	_, statErr := os.Lstat(destination)
	existed := statErr == nil
	if err := copyTree(source, destination); err != nil {
		if !existed {
			_ = os.RemoveAll(destination)
		}
		return rpcError(err, "copy %s to %s (another file system; %s is left as it was)", source, destination, source)
	}
	if err := os.RemoveAll(source); err != nil {
		return rpcError(err, "moved %s to %s by copying it (another file system), but could not remove all of %s (the copy is whole)", source, destination, source)
	}
	return nil
}

// maxListDepth bounds ListDir's recursion.
const maxListDepth = 64

// DefaultMaxListEntries bounds what one ListDir answers: a deep listing of a large tree (a
// node_modules, or / at depth 64) would otherwise hold every entry in memory, and send them all in
// one message.
const DefaultMaxListEntries = 100_000

// errTooManyEntries stops a listing past its bound.
var errTooManyEntries = errors.New("too many entries")

func (s *Service) ListDir(_ context.Context, request *connect.Request[rpc.ListDirRequest]) (*connect.Response[rpc.ListDirResponse], error) {
	depth := request.Msg.GetDepth()
	if depth == 0 {
		// Not given (the Python SDK's depth=None sends 0): the directory's own entries, as E2B's envd lists.
		depth = 1
	}
	if depth > maxListDepth {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("depth %d: give 1 (the directory's own entries) to %d", depth, maxListDepth))
	}
	path, user, err := s.resolve(request.Header(), "path", request.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	response := &rpc.ListDirResponse{}
	names := s.names()
	limit := s.MaxListEntries
	if limit <= 0 {
		limit = DefaultMaxListEntries
	}
	if err := as(user, func() error {
		// A symlink to a directory lists the directory.
		info, err := os.Stat(path)
		if err != nil {
			return rpcError(err, "list %s", path)
		}
		if !info.IsDir() {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("list %s: it is not a directory", path))
		}
		// The directory is read where it really is, so that the guard sees what each entry is, however
		// the path reached it (/proc/self/root, a symlink to an ancestor); entries keep the path as asked.
		err = s.list(paths.Real(path), path, depth, limit, names, &response.Entries)
		switch {
		case errors.Is(err, errTooManyEntries):
			return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("list %s: more than %d entries down to depth %d, more than one listing answers: give a lower depth, or list the directories below it one by one", path, limit, depth))
		case err != nil:
			return rpcError(err, "list %s", path)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return connect.NewResponse(response), nil
}

// list appends the entries of dir (resolved: no symlink on its way) to entries, named below asked;
// past limit entries it stops with errTooManyEntries.
func (s *Service) list(dir, asked string, depth uint32, limit int, names *users.Names, entries *[]*rpc.EntryInfo) error {
	children, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	sort.Slice(children, func(i, j int) bool { return children[i].Name() < children[j].Name() })
	for _, child := range children {
		resolved, path := filepath.Join(dir, child.Name()), filepath.Join(asked, child.Name())
		if s.Guard.Hidden(resolved) {
			continue
		}
		info, err := child.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if len(*entries) >= limit {
			return errTooManyEntries
		}
		*entries = append(*entries, describeInfo(path, info, names))
		// A symlink is listed, not followed (info is the link's own): what is below stays resolved.
		if depth > 1 && info.IsDir() {
			if err := s.list(resolved, path, depth-1, limit, names, entries); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
				return err
			}
		}
	}
	return nil
}

func (s *Service) Remove(_ context.Context, request *connect.Request[rpc.RemoveRequest]) (*connect.Response[rpc.RemoveResponse], error) {
	path, user, err := s.resolve(request.Header(), "path", request.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	if path == "/" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("remove /: refusing to remove the sandbox's root"))
	}
	// Removing what is not there succeeds, as with E2B's envd (cleanup code removes without looking first).
	if err := as(user, func() error {
		if err := os.RemoveAll(path); err != nil {
			return rpcError(err, "remove %s", path)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&rpc.RemoveResponse{}), nil
}

// copyTree copies a file, symlink or directory tree, keeping modes and (as root) owners. FIFOs,
// sockets and devices are made anew, as mv does across file systems: their content is no file's.
func copyTree(source, destination string) error {
	info, err := os.Lstat(source)
	if err != nil {
		return err
	}
	switch {
	case info.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(source)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, destination); err != nil {
			return err
		}
	case info.IsDir():
		if err := os.Mkdir(destination, info.Mode().Perm()); err != nil {
			return err
		}
		children, err := os.ReadDir(source)
		if err != nil {
			return err
		}
		for _, child := range children {
			if err := copyTree(filepath.Join(source, child.Name()), filepath.Join(destination, child.Name())); err != nil {
				return err
			}
		}
	case info.Mode().IsRegular():
		if err := copyFile(source, destination, info.Mode().Perm()); err != nil {
			return err
		}
	default:
		if err := makeSpecial(destination, info); err != nil {
			return err
		}
	}
	if stat, ok := info.Sys().(*syscall.Stat_t); ok {
		_ = os.Lchown(destination, int(stat.Uid), int(stat.Gid))
	}
	return nil
}

// makeSpecial makes a FIFO, socket or device node like the one info describes.
func makeSpecial(destination string, info os.FileInfo) error {
	stat, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: cannot copy a %s", destination, info.Mode().Type())
	}
	if err := syscall.Mknod(destination, stat.Mode, int(stat.Rdev)); err != nil {
		return &os.PathError{Op: "mknod", Path: destination, Err: err}
	}
	return nil
}

// copyFile copies a regular file. It is opened without waiting (O_NONBLOCK): something swapped in
// for it since it was looked at (a FIFO, whose open would wait for a writer) is refused.
func copyFile(source, destination string, mode os.FileMode) error {
	in, err := os.OpenFile(source, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	if info, err := in.Stat(); err != nil {
		return err
	} else if !info.Mode().IsRegular() {
		return fmt.Errorf("%s changed into a %s while it was copied: %w", source, info.Mode().Type(), syscall.EINVAL)
	}
	out, err := os.OpenFile(destination, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
