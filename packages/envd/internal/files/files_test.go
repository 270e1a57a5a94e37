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
