package files

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"fast-sandbox.io/envd/internal/auth"
	"fast-sandbox.io/envd/internal/state"
	"fast-sandbox.io/envd/internal/users"
)

// writes records the size of every Write to the response: what goes out as one piece.
type writes struct {
	*httptest.ResponseRecorder
	sizes []int
}

func (w *writes) Write(p []byte) (int, error) {
	w.sizes = append(w.sizes, len(p))
	return w.ResponseRecorder.Write(p)
}

// A compressed download goes out in pieces of downloadChunkBytes (the last one smaller), not in
// the compressor's small ones, which clients such as Node.js's fetch decompress slowly one by one.
func TestACompressedDownloadIsWrittenInLargePieces(t *testing.T) {
	dir := t.TempDir()
	content := make([]byte, 4*downloadChunkBytes+123)
	if _, err := rand.Read(content); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "random.bin")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	st := state.New()
	handler := &Handler{Auth: auth.New(users.Directory{Root: "/"}, st), State: st, MaxUploadBytes: DefaultMaxUploadBytes}
	request := httptest.NewRequest(http.MethodGet, "/files?path="+path, nil)
	request.Header.Set("Accept-Encoding", "gzip")
	response := &writes{ResponseRecorder: httptest.NewRecorder()}
	handler.ServeHTTP(response, request)
	if response.Code != http.StatusOK || response.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("status %d, headers %v: %s", response.Code, response.Header(), response.Body.String())
	}
	if len(response.sizes) < 2 {
		t.Fatalf("written in %d pieces, want several of %d bytes", len(response.sizes), downloadChunkBytes)
	}
	for i, size := range response.sizes[:len(response.sizes)-1] {
		if size < downloadChunkBytes {
			t.Fatalf("piece %d of %d is %d bytes, want %d (pieces: %v)", i, len(response.sizes), size, downloadChunkBytes, response.sizes)
		}
	}
	unzipper, err := gzip.NewReader(bytes.NewReader(response.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(unzipper)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("decompressed %d bytes (%v), want the file's %d", len(got), err, len(content))
	}
}

func uploadWithMode(t *testing.T, handler *Handler, path, mode string, content string) *httptest.ResponseRecorder {
	t.Helper()
	query := "/files?path=" + path
	if mode != "" {
		query += "&mode=" + mode
	}
	request := httptest.NewRequest(http.MethodPost, query, bytes.NewReader([]byte(content)))
	request.Header.Set("Content-Type", "application/octet-stream")
	response := httptest.NewRecorder()
	handler.ServeHTTP(response, request)
	return response
}

// ?mode= gives a file exactly those permission bits: a new one whatever the umask, an existing one
// too (its content replaced); a mode that is not octal permission bits is refused and writes nothing.
func TestAnUploadsModeIsTheFilesMode(t *testing.T) {
	dir := t.TempDir()
	st := state.New()
	handler := &Handler{Auth: auth.New(users.Directory{Root: "/"}, st), State: st, MaxUploadBytes: DefaultMaxUploadBytes}
	modeOf := func(path string) os.FileMode {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return info.Mode().Perm()
	}

	script := filepath.Join(dir, "run.sh")
	if response := uploadWithMode(t, handler, script, "0777", "#!/bin/sh\n"); response.Code != http.StatusOK {
		t.Fatalf("status %d: %s", response.Code, response.Body.String())
	}
	if got := modeOf(script); got != 0o777 { // 0777 under any umask: set, not masked
		t.Fatalf("new file's mode %#o, want 0777", got)
	}
	if response := uploadWithMode(t, handler, script, "640", "echo again\n"); response.Code != http.StatusOK {
		t.Fatalf("status %d: %s", response.Code, response.Body.String())
	}
	if got := modeOf(script); got != 0o640 {
		t.Fatalf("existing file's mode %#o, want 0640", got)
	}
	if content, _ := os.ReadFile(script); string(content) != "echo again\n" {
		t.Fatalf("content %q", content)
	}
	if response := uploadWithMode(t, handler, script, "", "plain\n"); response.Code != http.StatusOK || modeOf(script) != 0o640 {
		t.Fatalf("status %d, mode %#o: an upload without a mode keeps the existing file's", response.Code, modeOf(script))
	}

	for _, bad := range []string{"rwx", "1000", "4755", "-1", "9"} {
		target := filepath.Join(dir, "bad-"+bad)
		response := uploadWithMode(t, handler, target, bad, "x")
		if response.Code != http.StatusBadRequest || !bytes.Contains(response.Body.Bytes(), []byte("0 to 777")) {
			t.Fatalf("mode %q: status %d: %s", bad, response.Code, response.Body.String())
		}
		if _, err := os.Lstat(target); !os.IsNotExist(err) {
			t.Fatalf("mode %q: %s was written (%v)", bad, target, err)
		}
	}
	if got := modeOf(script); got != 0o640 {
		t.Fatalf("mode %#o after refused uploads", got)
	}
}

// Another user may write a file it does not own (here: world-writable) but not change its mode:
// refused before the upload is read, the file left as it was; the same mode is no change.
func TestOnlyAFilesOwnerMayChangeItsModeThroughAnUpload(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to act as another user") // these machines run the tests as root
	}
	dir := t.TempDir()
	for _, enterable := range []string{filepath.Dir(dir), dir} { // the test's own directories are 0700
		if err := os.Chmod(enterable, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "shared.txt")
	if err := os.WriteFile(path, []byte("root's\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	st := state.New()
	handler := &Handler{Auth: auth.New(users.Directory{Root: "/"}, st), State: st, MaxUploadBytes: DefaultMaxUploadBytes}
	asNobody := func(mode, content string) *httptest.ResponseRecorder {
		return uploadWithMode(t, handler, path+"&username=nobody", mode, content)
	}
	response := asNobody("777", "nobody's\n")
	if response.Code != http.StatusForbidden || !bytes.Contains(response.Body.Bytes(), []byte("only its owner may change it")) {
		t.Fatalf("status %d: %s", response.Code, response.Body.String())
	}
	if content, _ := os.ReadFile(path); string(content) != "root's\n" {
		t.Fatalf("content %q after the refusal", content)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o666 {
		t.Fatalf("mode %#o after the refusal", info.Mode().Perm())
	}
	if response := asNobody("666", "same mode\n"); response.Code != http.StatusOK {
		t.Fatalf("the same mode: status %d: %s", response.Code, response.Body.String())
	}
	if content, _ := os.ReadFile(path); string(content) != "same mode\n" {
		t.Fatalf("content %q", content)
	}
}

// Pseudo files say their size is 0 and cannot be seeked to their end: their content is streamed as
// read, compressed or not; an empty file is still an empty answer with a Content-Length of 0.
func TestPseudoFilesOfSizeZeroAreDownloadedWithTheirContent(t *testing.T) {
	st := state.New()
	handler := &Handler{Auth: auth.New(users.Directory{Root: "/"}, st), State: st, MaxUploadBytes: DefaultMaxUploadBytes}
	want, err := os.ReadFile("/proc/self/status")
	if err != nil || len(want) == 0 {
		t.Fatalf("reading /proc/self/status: %v", err)
	}
	for _, path := range []string{"/proc/cpuinfo", "/proc/self/status", "/proc/self/cmdline"} {
		for _, gzipped := range []bool{false, true} {
			request := httptest.NewRequest(http.MethodGet, "/files?path="+path, nil)
			if gzipped {
				request.Header.Set("Accept-Encoding", "gzip")
			}
			response := httptest.NewRecorder()
			handler.ServeHTTP(response, request)
			if response.Code != http.StatusOK {
				t.Fatalf("%s (gzip %v): status %d: %s", path, gzipped, response.Code, response.Body.String())
			}
			body := response.Body.Bytes()
			if gzipped {
				unzipper, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(unzipper); err != nil {
					t.Fatal(err)
				}
			}
			if len(body) == 0 {
				t.Fatalf("%s (gzip %v): empty", path, gzipped)
			}
			if path == "/proc/self/status" && !bytes.HasPrefix(body, []byte("Name:")) {
				t.Fatalf("%s: %q", path, body)
			}
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	request := httptest.NewRequest(http.MethodGet, "/files?path="+empty, nil)
	request.Header.Set("Accept-Encoding", "gzip")
	response := httptest.NewRecorder()
	handler.ServeHTTP(response, request)
	if response.Code != http.StatusOK || response.Header().Get("Content-Length") != "0" || response.Body.Len() != 0 {
		t.Fatalf("empty file: status %d, headers %v, %d bytes", response.Code, response.Header(), response.Body.Len())
	}
}
