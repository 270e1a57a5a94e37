package filesystem

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"connectrpc.com/connect"

	"fast-sandbox.io/envd/internal/paths"
)

// rpcError maps a file system error to a Connect code: missing → not_found, existing →
// already_exists, refused → permission_denied, full (a disk, or the open files or inotify
// instances the kernel grants) → resource_exhausted, in use (a mount point) → failed_precondition.
func rpcError(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	wrapped := fmt.Errorf(format+": %w", append(args, err)...)
	switch {
	case errors.Is(err, paths.ErrProtected):
		return connect.NewError(connect.CodePermissionDenied, wrapped)
	case errors.Is(err, paths.ErrEmpty):
		return connect.NewError(connect.CodeInvalidArgument, wrapped)
	case errors.Is(err, fs.ErrNotExist):
		return connect.NewError(connect.CodeNotFound, wrapped)
	case errors.Is(err, fs.ErrExist), errors.Is(err, syscall.ENOTEMPTY):
		return connect.NewError(connect.CodeAlreadyExists, wrapped)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return connect.NewError(connect.CodePermissionDenied, wrapped)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return connect.NewError(connect.CodeResourceExhausted, wrapped)
	case errors.Is(err, syscall.EBUSY):
		return connect.NewError(connect.CodeFailedPrecondition, wrapped)
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENAMETOOLONG), errors.Is(err, syscall.ELOOP):
		return connect.NewError(connect.CodeInvalidArgument, wrapped)
	default:
		return connect.NewError(connect.CodeInternal, wrapped)
	}
}
