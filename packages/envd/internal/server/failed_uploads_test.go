package server_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"mime/multipart"
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

const precious = "precious content that must survive\n"

// stagingLeftovers lists what an upload left beside dir's own files (want, by name).
func stagingLeftovers(t *testing.T, dir string, want ...string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, entry := range entries {
		expected := false
		for _, name := range want {
			expected = expected || entry.Name() == name
		}
		if !expected {
			left = append(left, entry.Name())
		}
	}
	return left
}

// chunked is a body of unknown length (no Content-Length): the limit is found while streaming.
func chunked(body io.Reader) io.Reader { return io.MultiReader(body) }

func TestAFailedUploadLeavesTheFileItWouldReplaceUntouched(t *testing.T) {
	s := start(t, server.Options{MaxUploadBytes: 1000})
	target := filepath.Join(s.home, "precious.txt")
	var corrupt bytes.Buffer
	zipper := gzip.NewWriter(&corrupt)
	_, _ = zipper.Write(bytes.Repeat([]byte("y"), 10))
	_ = zipper.Flush()
	corrupt.WriteString("not the rest of a gzip stream")
	tooLarge := strings.Repeat("x", 2000)
	contentType, multipartTooLarge := multipartBody(t, map[string]string{"precious.txt": tooLarge})
	cases := []struct {
		name        string
		contentType string
		body        io.Reader
		header      http.Header
		status      int
	}{
		{"past the limit", "application/octet-stream", chunked(strings.NewReader(tooLarge)), nil, http.StatusRequestEntityTooLarge},
		{"a multipart part past the limit", contentType, chunked(multipartTooLarge), nil, http.StatusRequestEntityTooLarge},
		{"corrupt gzip", "application/octet-stream", &corrupt, http.Header{"Content-Encoding": {"gzip"}}, http.StatusBadRequest},
	}
	for _, c := range cases {
		write(t, target, precious)
		response := must(upload(s.url+"/files?path="+url.QueryEscape(target), c.contentType, c.body, c.header))
		response.Body.Close()
		if response.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d", c.name, response.StatusCode, c.status)
		}
		if after, _ := os.ReadFile(target); string(after) != precious {
			t.Errorf("%s: the upload failed and left %.40q (%d bytes) in place of the old content", c.name, after, len(after))
		}
		if left := stagingLeftovers(t, s.home, "precious.txt"); len(left) > 0 {
			t.Errorf("%s: the failed upload left %v behind", c.name, left)
		}
	}
}

func TestAnUploadWhoseClientGoesAwayLeavesTheFileUntouched(t *testing.T) {
	s := start(t, server.Options{})
	target := filepath.Join(s.home, "precious.txt")
	write(t, target, precious)
	body, sender := io.Pipe()
	go func() {
		_, _ = sender.Write(bytes.Repeat([]byte("x"), 64<<10))
		time.Sleep(200 * time.Millisecond) // the daemon has begun writing
		_ = sender.CloseWithError(errors.New("the client went away"))
	}()
	if response, err := upload(s.url+"/files?path="+url.QueryEscape(target), "application/octet-stream", body, nil); err == nil {
		response.Body.Close()
		t.Fatalf("the upload was answered %d: the client should have failed", response.StatusCode)
	}
	// The daemon notices the broken request on its own time: give it until the staging file is gone.
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && len(stagingLeftovers(t, s.home, "precious.txt")) > 0; {
		time.Sleep(20 * time.Millisecond)
	}
	if after, _ := os.ReadFile(target); string(after) != precious {
		t.Fatalf("a broken upload left %d bytes in place of the old content", len(after))
	}
	if left := stagingLeftovers(t, s.home, "precious.txt"); len(left) > 0 {
		t.Fatalf("the broken upload left %v behind", left)
	}
}

func TestAFailedUploadOfANewFileLeavesNoFile(t *testing.T) {
	s := start(t, server.Options{MaxUploadBytes: 16})
	target := filepath.Join(s.home, "new.txt")
	response := must(upload(s.url+"/files?path="+url.QueryEscape(target), "application/octet-stream", chunked(strings.NewReader(strings.Repeat("x", 40))), nil))
	response.Body.Close()
	if response.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", response.StatusCode)
	}
	if left := stagingLeftovers(t, s.home); len(left) > 0 {
		t.Fatalf("a failed upload of a new file left %v", left)
	}
}

// Replacing a file keeps what E2B's envd does: the same file (its inode, so hard links and bind
// mounts see the content), and a watch sees a write of its name. It is written as the uploading
// user, and keeps its owner and mode (user_identity_test.go: a file the user may not write is
// refused, not given to the user).
func TestASuccessfulUploadReplacesTheFileInPlaceAsTheUploadingUser(t *testing.T) {
	s := start(t, server.Options{})
	dir := filepath.Join(s.home, "watched")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "replaced.txt")
	write(t, target, precious)
	if err := os.Chmod(target, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{dir, target} {
		if err := os.Chown(path, testerUID, testerUID); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(s.home, "hard-link")
	if err := os.Link(target, link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	watch, err := s.fs.WatchDir(ctx, connect.NewRequest(&fsrpc.WatchDirRequest{Path: dir}))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if !watch.Receive() || watch.Msg().GetStart() == nil {
		t.Fatalf("first event %v (%v), want start", watch.Msg(), watch.Err())
	}
	decode[[]written](t, must(upload(s.url+"/files?path="+url.QueryEscape(target)+"&username=tester", "application/octet-stream", strings.NewReader("new content"), nil)), http.StatusOK)
	for written := false; !written; {
		if !watch.Receive() {
			t.Fatalf("no write event for replaced.txt: %v", watch.Err())
		}
		event := watch.Msg().GetFilesystem()
		if strings.HasPrefix(event.GetName(), ".") {
			t.Errorf("the watch saw the upload's staging file: %v", event)
		}
		written = event.GetName() == "replaced.txt" && event.GetType() == fsrpc.EventType_EVENT_TYPE_WRITE
	}
	if content, _ := os.ReadFile(link); string(content) != "new content" {
		t.Fatalf("the hard link reads %q: the upload replaced another file", content)
	}
	info, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if stat := info.Sys().(*syscall.Stat_t); stat.Uid != testerUID || stat.Gid != testerUID || info.Mode().Perm() != 0o600 {
		t.Fatalf("owner %d:%d mode %v: want the owner and mode kept", stat.Uid, stat.Gid, info.Mode())
	}
	if left := stagingLeftovers(t, dir, "replaced.txt"); len(left) > 0 {
		t.Fatalf("the upload left %v behind", left)
	}
}

// A disk without the room for the new content answers 507 before the file it would replace is
// truncated: the old content survives (the copy into it would fail halfway).
func TestAnUploadTheDiskHasNoRoomForLeavesTheFileItWouldReplaceUntouched(t *testing.T) {
	s := start(t, server.Options{})
	small := filepath.Join(s.home, "small-disk")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	defer syscall.Unmount(small, syscall.MNT_DETACH)
	target := filepath.Join(small, "precious.txt")
	old := strings.Repeat(precious, 8<<10/len(precious))
	write(t, target, old)
	// Staged beside it, 40 KiB leaves 16 free: with the 8 the truncation would free, too few.
	response := must(upload(s.url+"/files?path="+url.QueryEscape(target), "application/octet-stream", bytes.NewReader(make([]byte, 40<<10)), nil))
	if got := decode[failure](t, response, http.StatusInsufficientStorage); !strings.Contains(got.Message, "disk is full") {
		t.Fatalf("%+v", got)
	}
	if after, _ := os.ReadFile(target); string(after) != old {
		t.Fatalf("the upload found no room and left %d bytes in place of the old content", len(after))
	}
	if left := stagingLeftovers(t, small, "precious.txt"); len(left) > 0 {
		t.Fatalf("the failed upload left %v behind", left)
	}
	// One that fits still replaces it, in place.
	decode[[]written](t, must(upload(s.url+"/files?path="+url.QueryEscape(target), "application/octet-stream", strings.NewReader("new content"), nil)), http.StatusOK)
	if after, _ := os.ReadFile(target); string(after) != "new content" {
		t.Fatalf("after an upload that fits: %q", after)
	}
}

// orderedMultipart is a multipart body of parts named "file", in the order given (name, content, …).
func orderedMultipart(t *testing.T, parts ...string) (string, *bytes.Buffer) {
	t.Helper()
	var body bytes.Buffer
	writer := multipart.NewWriter(&body)
	for i := 0; i+1 < len(parts); i += 2 {
		part, err := writer.CreateFormFile("file", parts[i])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = part.Write([]byte(parts[i+1]))
	}
	_ = writer.Close()
	return writer.FormDataContentType(), &body
}

// A multipart upload is all or nothing: a part that fails undoes the new files the parts before it
// wrote, and the existing files they would replace are left untouched.
func TestAFailedMultipartUploadChangesNoneOfItsFiles(t *testing.T) {
	s := start(t, server.Options{MaxUploadBytes: 1000})
	existing := filepath.Join(s.home, "precious.txt")
	write(t, existing, precious)
	contentType, body := orderedMultipart(t,
		filepath.Join(s.home, "new.txt"), "a new file",
		existing, "replaced content",
		filepath.Join(s.home, "too-large.txt"), strings.Repeat("x", 2000))
	response := must(upload(s.url+"/files", contentType, chunked(body), nil))
	response.Body.Close()
	if response.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", response.StatusCode)
	}
	if after, _ := os.ReadFile(existing); string(after) != precious {
		t.Errorf("an earlier part of the failed upload left %q in place of the old content", after)
	}
	if _, err := os.Stat(filepath.Join(s.home, "new.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the new file of an earlier part outlived the failed upload: %v", err)
	}
	if left := stagingLeftovers(t, s.home, "precious.txt"); len(left) > 0 {
		t.Errorf("the failed upload left %v behind", left)
	}

	// Received in full, the same parts (the last one small) all land.
	contentType, body = orderedMultipart(t,
		filepath.Join(s.home, "new.txt"), "a new file",
		existing, "replaced content",
		filepath.Join(s.home, "small.txt"), "small")
	if got := decode[[]written](t, must(upload(s.url+"/files", contentType, body, nil)), http.StatusOK); len(got) != 3 || got[1].Path != existing {
		t.Fatalf("written %+v", got)
	}
	for path, want := range map[string]string{"new.txt": "a new file", "precious.txt": "replaced content", "small.txt": "small"} {
		if content, _ := os.ReadFile(filepath.Join(s.home, path)); string(content) != want {
			t.Errorf("%s: %q, want %q", path, content, want)
		}
	}
}
