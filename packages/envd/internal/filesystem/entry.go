// Package filesystem implements filesystem.Filesystem (E2B's envd interface): stat, list, make,
// move and remove entries, and watch directories, on the sandbox's own file system.
package filesystem

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"google.golang.org/protobuf/types/known/timestamppb"

	rpc "fast-sandbox.io/envd/gen/filesystem"
	"fast-sandbox.io/envd/internal/users"
)

// Describe is the EntryInfo of path (not following a final symlink: a symlink is described as
// one, with its target).
func Describe(path string, names *users.Names) (*rpc.EntryInfo, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	return describeInfo(path, info, names), nil
}

func describeInfo(path string, info fs.FileInfo, names *users.Names) *rpc.EntryInfo {
	entry := &rpc.EntryInfo{
		Name:         filepath.Base(path),
		Path:         path,
		Size:         info.Size(),
		Mode:         modeBits(info.Mode()),
		Permissions:  Permissions(info.Mode()),
		ModifiedTime: timestamppb.New(info.ModTime()),
	}
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		entry.Type = rpc.FileType_FILE_TYPE_SYMLINK
		if target, err := os.Readlink(path); err == nil {
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(path), target)
			}
			entry.SymlinkTarget = &target
		}
	case info.IsDir():
		entry.Type = rpc.FileType_FILE_TYPE_DIRECTORY
	default:
		entry.Type = rpc.FileType_FILE_TYPE_FILE
	}
	if stat, ok := info.Sys().(*syscall.Stat_t); ok {
		entry.Owner = names.User(stat.Uid)
		entry.Group = names.Group(stat.Gid)
	}
	return entry
}

// modeBits is the Unix permission bits, setuid, setgid and sticky included (st_mode & 07777).
func modeBits(mode fs.FileMode) uint32 {
	bits := uint32(mode.Perm())
	if mode&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if mode&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if mode&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	return bits
}

// Permissions is the mode as `ls -l` prints it, e.g. -rw-r--r--, drwxr-xr-x, lrwxrwxrwx, -rwsr-xr-x.
func Permissions(mode fs.FileMode) string {
	text := []byte("----------")
	switch {
	case mode&fs.ModeDir != 0:
		text[0] = 'd'
	case mode&fs.ModeSymlink != 0:
		text[0] = 'l'
	case mode&fs.ModeNamedPipe != 0:
		text[0] = 'p'
	case mode&fs.ModeSocket != 0:
		text[0] = 's'
	case mode&fs.ModeCharDevice != 0:
		text[0] = 'c'
	case mode&fs.ModeDevice != 0:
		text[0] = 'b'
	}
	const letters = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if mode&(1<<uint(8-i)) != 0 {
			text[i+1] = letters[i]
		}
	}
	special := func(index int, set bool, executable, notExecutable byte) {
		if !set {
			return
		}
		if text[index] == 'x' {
			text[index] = executable
		} else {
			text[index] = notExecutable
		}
	}
	special(3, mode&fs.ModeSetuid != 0, 's', 'S')
	special(6, mode&fs.ModeSetgid != 0, 's', 'S')
	special(9, mode&fs.ModeSticky != 0, 't', 'T')
	return string(text)
}
