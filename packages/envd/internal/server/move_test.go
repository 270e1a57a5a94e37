package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsrpc "fast-sandbox.io/envd/gen/filesystem"
	"fast-sandbox.io/envd/internal/server"
)

// mountTmpfs mounts a tmpfs of size at dir (made first) until the test ends: another file system,
// where a rename from elsewhere fails with EXDEV and Move copies.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
}

func moveOf(t *testing.T, s *sandbox, source, destination string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.fs.Move(ctx, connect.NewRequest(&fsrpc.MoveRequest{Source: source, Destination: destination}))
	return err
}

func TestMovingADirectoryIntoItselfIsRefusedBeforeAnythingIsMade(t *testing.T) {
	s := start(t, server.Options{})
	// On one file system (the kernel says EINVAL), and from a mount point, where the rename fails
	// with EXDEV and a copy into itself would never end.
	plain := filepath.Join(s.home, "plain")
	mounted := filepath.Join(s.home, "mounted")
	mountTmpfs(t, mounted, "1m")
	for _, dir := range []string{plain, mounted} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, "file.txt"), "content")
		for _, destination := range []string{filepath.Join(dir, "in", "x"), filepath.Join(dir, "x")} {
			err := moveOf(t, s, dir, destination)
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "a directory cannot be moved into itself") {
				t.Fatalf("move %s to %s: %v, want invalid_argument saying it cannot move into itself", dir, destination, err)
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) != 1 || entries[0].Name() != "file.txt" {
			t.Fatalf("%s after the refused moves: %v %v, want only file.txt (no directory made for the destination)", dir, entries, err)
		}
	}
}

func TestMovingATreeThatHoldsAMountPointToAnotherFileSystemIsRefusedBeforeAnythingIsCopied(t *testing.T) {
	s := start(t, server.Options{})
	other := filepath.Join(s.home, "other-disk")
	mountTmpfs(t, other, "1m")
	tree := filepath.Join(s.home, "tree")
	mountTmpfs(t, filepath.Join(tree, "sub"), "1m")
	write(t, filepath.Join(tree, "file.txt"), "content")
	write(t, filepath.Join(tree, "sub", "inner.txt"), "inner")
	destination := filepath.Join(other, "tree")
	err := moveOf(t, s, tree, destination)
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "it holds a mount point, "+filepath.Join(tree, "sub")) {
		t.Fatalf("move a tree holding a mount point to another file system: %v, want failed_precondition naming the mount point", err)
	}
	if _, err := os.Lstat(destination); !os.IsNotExist(err) {
		t.Fatalf("the destination was made: %v", err)
	}
	for file, want := range map[string]string{filepath.Join(tree, "file.txt"): "content", filepath.Join(tree, "sub", "inner.txt"): "inner"} {
		if content, err := os.ReadFile(file); err != nil || string(content) != want {
			t.Fatalf("the source's %s: %q %v, want it as it was", file, content, err)
		}
	}
	// A symlink to the tree is moved as itself: what its target holds does not matter.
	link := filepath.Join(s.home, "link")
	if err := os.Symlink(tree, link); err != nil {
		t.Fatal(err)
	}
	if err := moveOf(t, s, link, filepath.Join(other, "link")); err != nil {
		t.Fatalf("move a symlink to a tree that holds a mount point: %v", err)
	}
	if target, err := os.Readlink(filepath.Join(other, "link")); err != nil || target != tree {
		t.Fatalf("the moved symlink: %q %v, want one to %s", target, err, tree)
	}
	// A mount point itself, moved to another file system, is refused the same way.
	err = moveOf(t, s, filepath.Join(tree, "sub"), filepath.Join(other, "sub"))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "is a mount point, which cannot be moved") {
		t.Fatalf("move a mount point: %v, want failed_precondition", err)
	}
}

func TestACopyThatFailsHalfwayRemovesItselfAndLeavesTheSourceWhole(t *testing.T) {
	s := start(t, server.Options{})
	small := filepath.Join(s.home, "small-disk")
	mountTmpfs(t, small, "64k")
	tree := filepath.Join(s.home, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(tree, "a.txt"), "first")
	write(t, filepath.Join(tree, "big.bin"), strings.Repeat("x", 256*1024))
	destination := filepath.Join(small, "tree")
	err := moveOf(t, s, tree, destination)
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "is left as it was") {
		t.Fatalf("move a tree larger than the destination's file system: %v, want resource_exhausted saying the source is left as it was", err)
	}
	if _, err := os.Lstat(destination); !os.IsNotExist(err) {
		t.Fatalf("the partial copy is still there: %v", err)
	}
	if content, err := os.ReadFile(filepath.Join(tree, "a.txt")); err != nil || string(content) != "first" {
		t.Fatalf("the source's a.txt: %q %v", content, err)
	}
	if info, err := os.Stat(filepath.Join(tree, "big.bin")); err != nil || info.Size() != 256*1024 {
		t.Fatalf("the source's big.bin: %v %v", info, err)
	}
}
