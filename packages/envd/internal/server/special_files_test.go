package server_test

import (
	"context"
	"net/http"
	"net/url"
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

// releaseFifo lets a reader blocked opening fifo go on (a writer that opens and closes it), so a
// daemon that hangs on a FIFO can still shut down after the test failed.
func releaseFifo(fifo string) {
	if writer, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		writer.Close()
	}
}

func TestDownloadingAFifoIsRefusedAtOnce(t *testing.T) {
	s := start(t, server.Options{})
	fifo := filepath.Join(s.home, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	defer releaseFifo(fifo)
	client := &http.Client{Timeout: 2 * time.Second}
	response, err := client.Get(s.url + "/files?path=" + url.QueryEscape(fifo))
	if err != nil {
		t.Fatalf("GET /files of a FIFO: %v, want 400 at once (opening a FIFO waits for a writer)", err)
	}
	got := decode[failure](t, response, http.StatusBadRequest)
	if !strings.HasSuffix(got.Message, "pipe is a FIFO: only regular files are read and written") {
		t.Fatalf("%+v", got)
	}
}

func TestMovingATreeToAnotherFileSystemRecreatesItsFifos(t *testing.T) {
	s := start(t, server.Options{})
	other := filepath.Join(s.home, "other-disk")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	// A rename to another file system fails with EXDEV: Move copies, as mv does.
	if err := syscall.Mount("tmpfs", other, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	defer syscall.Unmount(other, syscall.MNT_DETACH)
	tree := filepath.Join(s.home, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(tree, "file.txt"), "content")
	fifo := filepath.Join(tree, "pipe")
	if err := syscall.Mkfifo(fifo, 0o640); err != nil {
		t.Fatal(err)
	}
	defer releaseFifo(fifo)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	destination := filepath.Join(other, "tree")
	if _, err := s.fs.Move(ctx, connect.NewRequest(&fsrpc.MoveRequest{Source: tree, Destination: destination})); err != nil {
		t.Fatalf("move a tree with a FIFO to another file system: %v", err)
	}
	info, err := os.Lstat(filepath.Join(destination, "pipe"))
	if err != nil || info.Mode().Type() != os.ModeNamedPipe || info.Mode().Perm() != 0o640 {
		t.Fatalf("the moved FIFO: %v %v, want a FIFO with mode 0640", info, err)
	}
	if content, err := os.ReadFile(filepath.Join(destination, "file.txt")); err != nil || string(content) != "content" {
		t.Fatalf("the moved file: %q %v", content, err)
	}
	if _, err := os.Lstat(tree); !os.IsNotExist(err) {
		t.Fatalf("the source is still there: %v", err)
	}
}
