// Package files serves GET and POST /files, E2B envd's plain-HTTP file transfer: downloads (gzip
// when asked), and uploads as multipart (one or many `file` parts) or as a raw
// application/octet-stream body, gzip-encoded or not.
package files

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"

	"fast-sandbox.io/envd/internal/auth"
	"fast-sandbox.io/envd/internal/paths"
	"fast-sandbox.io/envd/internal/state"
	"fast-sandbox.io/envd/internal/users"
)

// downloadChunkBytes is the size of the pieces a compressed download is written in.
const downloadChunkBytes = 256 << 10

// DefaultMaxUploadBytes is the largest upload accepted by default (1 GiB).
const DefaultMaxUploadBytes int64 = 1 << 30

// Handler serves /files.
type Handler struct {
	Auth  *auth.Authenticator
	State *state.State
	Guard paths.Guard
	// MaxUploadBytes bounds an upload, counted after gzip decoding too; larger ones get 413.
	MaxUploadBytes int64
}

// WrittenFile is one element of an upload's reply.
type WrittenFile struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
}

// httpError is an error with its HTTP status, written as {"message", "code"}.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }

func fail(status int, format string, args ...any) *httpError {
	return &httpError{status: status, err: fmt.Errorf(format, args...)}
}

// WriteError writes E2B's error body: {"message": …, "code": <status>}.
func WriteError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"message": message, "code": status})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var err *httpError
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		err = h.download(w, r)
	case http.MethodPost:
		err = h.upload(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		err = fail(http.StatusMethodNotAllowed, "%s /files: use GET to download or POST to upload", r.Method)
	}
	if err != nil {
		WriteError(w, err.status, err.Error())
	}
}

// caller authorizes the request and resolves its user: ?username=, else Basic authorization, else
// the default user. A signed request (a presigned URL) acts only as the user its signature covers
// (?username=, else the default): a header added to it cannot change who it acts as.
func (h *Handler) caller(r *http.Request, operation string) (*users.User, *httpError) {
	query := r.URL.Query()
	if err := h.Auth.FilesAllowed(r.Header, query.Get("path"), operation, query.Get("username"), query.Get("signature"), query.Get("signature_expiration")); err != nil {
		return nil, fail(http.StatusUnauthorized, "%v", err)
	}
	name := query.Get("username")
	if name == "" && !query.Has("signature") {
		var err error
		if name, err = auth.BasicUser(r.Header.Get("Authorization")); err != nil {
			return nil, fail(http.StatusUnauthorized, "%v", err)
		}
	}
	user, err := h.Auth.User(name)
	switch {
	case err == nil:
		return user, nil
	case errors.Is(err, auth.ErrCannotSwitchUser):
		return nil, fail(http.StatusForbidden, "%v", err)
	case errors.Is(err, users.ErrUnknownUser), errors.Is(err, users.ErrUnknownGroup):
		return nil, fail(http.StatusUnauthorized, "%v", err)
	default:
		return nil, fail(http.StatusInternalServerError, "%v", err)
	}
}

// resolve turns a requested path into an absolute, guarded one.
func (h *Handler) resolve(requested string, user *users.User) (string, *httpError) {
	path, err := paths.Absolute(requested, user.Home, h.State.DefaultWorkdir())
	if err != nil {
		return "", fail(http.StatusBadRequest, "path: %v", err)
	}
	if err := h.Guard.Check(path); err != nil {
		return "", fail(http.StatusForbidden, "%v", err)
	}
	return path, nil
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EROFS):
		return http.StatusForbidden
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return http.StatusInsufficientStorage
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENAMETOOLONG), errors.Is(err, syscall.ELOOP):
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}

func (h *Handler) download(w http.ResponseWriter, r *http.Request) *httpError {
	user, failure := h.caller(r, "read")
	if failure != nil {
		return failure
	}
	requested := r.URL.Query().Get("path")
	if requested == "" {
		return fail(http.StatusBadRequest, "the path query parameter is required: the file to download")
	}
	path, failure := h.resolve(requested, user)
	if failure != nil {
		return failure
	}
	// Opened as the user: a file the user may not read is refused, however the path reaches it.
	var file *os.File
	var info os.FileInfo
	if failure := as(user, func() *httpError {
		var failure *httpError
		file, info, failure = openRegular(path)
		return failure
	}); failure != nil {
		return failure
	}
	defer file.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	var content io.Reader = file
	sized := info.Size() > 0
	if !sized {
		// A size of 0 is an empty file, or a pseudo file whose content is made as it is read
		// (/proc/cpuinfo, /proc/1/cmdline, /sys/...): it cannot be seeked to its end for a length,
		// so its content is streamed as read, without ranges.
		peeking := bufio.NewReaderSize(file, downloadChunkBytes)
		if _, err := peeking.Peek(1); err != nil {
			// Empty (or unreadable: the error is what an empty read would have told).
			http.ServeContent(w, r, "", info.ModTime(), file)
			return nil
		}
		content = peeking
	}
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Add("Vary", "Accept-Encoding")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return nil
		}
		// The compressed stream goes out in pieces of downloadChunkBytes: written to the response as
		// the compressor makes them, it left in pieces of the response's 4 KiB buffer, which some
		// clients decompress one at a time, slowly (Node.js's fetch: 50 MB of random bytes took
		// 10–17 s, against 0.1 s uncompressed).
		buffered := bufio.NewWriterSize(w, downloadChunkBytes)
		compressor, _ := gzip.NewWriterLevel(buffered, gzip.BestSpeed)
		if _, err := io.Copy(compressor, content); err == nil && compressor.Close() == nil {
			_ = buffered.Flush()
		}
		return nil
	}
	if !sized {
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = io.Copy(w, content)
		}
		return nil
	}
	// Content-Length (0 for an empty file, which E2B's JS SDK checks), ranges, If-Modified-Since.
	http.ServeContent(w, r, "", info.ModTime(), file)
	return nil
}

// openRegular opens a regular file for reading. Anything else is refused before it is opened:
// opening a FIFO would wait for a writer, a device could do anything. The file is opened without
// waiting (O_NONBLOCK, which reads of a regular file ignore) and checked again, in case it was
// swapped in between.
func openRegular(path string) (*os.File, os.FileInfo, *httpError) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, nil, fail(statusOf(err), "%s: %v", path, err)
	}
	if failure := refuseIrregular(path, info); failure != nil {
		return nil, nil, failure
	}
	file, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fail(statusOf(err), "%s: %v", path, err)
	}
	if info, err = file.Stat(); err != nil {
		file.Close()
		return nil, nil, fail(statusOf(err), "%s: %v", path, err)
	}
	if failure := refuseIrregular(path, info); failure != nil {
		file.Close()
		return nil, nil, failure
	}
	return file, info, nil
}

func refuseIrregular(path string, info os.FileInfo) *httpError {
	switch {
	case info.IsDir():
		return fail(http.StatusBadRequest, "%s is a directory: list it with filesystem.Filesystem/ListDir", path)
	case !info.Mode().IsRegular():
		return fail(http.StatusBadRequest, "%s is %s: only regular files are read and written", path, kindOf(info.Mode()))
	}
	return nil
}

// kindOf names what a file that is not a regular one is, for messages ("a character device").
func kindOf(mode os.FileMode) string {
	switch {
	case mode&os.ModeCharDevice != 0:
		return "a character device"
	case mode&os.ModeDevice != 0:
		return "a block device"
	case mode&os.ModeNamedPipe != 0:
		return "a FIFO"
	case mode&os.ModeSocket != 0:
		return "a socket"
	case mode&os.ModeSymlink != 0:
		return "a symbolic link"
	default:
		return "not a regular file"
	}
}

// acceptsGzip reads Accept-Encoding: gzip (or *) present and not refused with q=0.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, parameters, _ := strings.Cut(strings.TrimSpace(part), ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding != "gzip" && coding != "*" {
			continue
		}
		quality := strings.ReplaceAll(strings.ToLower(parameters), " ", "")
		return quality != "q=0" && quality != "q=0.0" && quality != "q=0.00" && quality != "q=0.000"
	}
	return false
}

// limitedReader fails with errTooLarge past limit bytes (a decoded gzip body can be far larger
// than what was sent).
type limitedReader struct {
	reader    io.Reader
	remaining int64
	limit     int64
}

var errTooLarge = errors.New("upload too large")

func (l *limitedReader) Read(buffer []byte) (int, error) {
	if l.remaining < 0 {
		return 0, errTooLarge
	}
	if int64(len(buffer)) > l.remaining+1 {
		buffer = buffer[:l.remaining+1]
	}
	n, err := l.reader.Read(buffer)
	l.remaining -= int64(n)
	if l.remaining < 0 {
		return n, errTooLarge
	}
	return n, err
}

func (h *Handler) upload(w http.ResponseWriter, r *http.Request) *httpError {
	limit := h.MaxUploadBytes
	if limit <= 0 {
		limit = DefaultMaxUploadBytes
	}
	tooLarge := fail(http.StatusRequestEntityTooLarge, "the upload is larger than this sandbox accepts (%d bytes); split it into several files", limit)
	if r.ContentLength > limit {
		return tooLarge
	}
	user, failure := h.caller(r, "write")
	if failure != nil {
		return failure
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, limit)
	switch encoding := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); encoding {
	case "", "identity":
	case "gzip":
		decompressor, err := gzip.NewReader(body)
		if err != nil {
			return fail(http.StatusBadRequest, "the body is not gzip data (Content-Encoding: gzip): %v", err)
		}
		defer decompressor.Close()
		body = decompressor
	default:
		return fail(http.StatusBadRequest, "Content-Encoding %q is not supported: send the body as is or gzip-encoded", encoding)
	}
	body = &limitedReader{reader: body, remaining: limit, limit: limit}
	mode, failure := uploadMode(r.URL.Query().Get("mode"))
	if failure != nil {
		return failure
	}
	if mode != nil && h.Auth.State.AccessToken() != "" && !h.Auth.TokenValid(r.Header) {
		// A signed URL grants the write of its path's content, which its signature covers; not a mode.
		return fail(http.StatusForbidden, "mode is not accepted with a signed URL (the signature covers the path, operation and user only); send the access token to set a mode")
	}

	mediaType, parameters, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mediaType = ""
	}
	var written []WrittenFile
	switch {
	case mediaType == "application/octet-stream":
		requested := r.URL.Query().Get("path")
		if requested == "" {
			return fail(http.StatusBadRequest, "the path query parameter is required for an application/octet-stream upload")
		}
		file, failure := h.receive(requested, body, user, mode)
		if failure != nil {
			return h.uploadFailure(failure, tooLarge)
		}
		if failure := h.commit(file); failure != nil {
			return failure
		}
		written = append(written, file.written)
	case strings.HasPrefix(mediaType, "multipart/"):
		if parameters["boundary"] == "" {
			return fail(http.StatusBadRequest, "the multipart Content-Type has no boundary")
		}
		reader := multipart.NewReader(body, parameters["boundary"])
		seen := map[string]bool{}
		// All or nothing: every part is received (existing files staged) before any existing file
		// is replaced, and a failure undoes what the parts before it did.
		var files []*received
		defer func() {
			for _, file := range files {
				file.discard()
			}
		}()
		for {
			part, err := reader.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				if errors.Is(err, errTooLarge) || isMaxBytes(err) {
					return tooLarge
				}
				return fail(http.StatusBadRequest, "reading the multipart body: %v", err)
			}
			if part.FormName() != "file" {
				_ = part.Close()
				continue
			}
			requested := r.URL.Query().Get("path")
			if requested == "" {
				requested = partFileName(part)
			}
			if requested == "" {
				return fail(http.StatusBadRequest, "a file part has no filename: give each part its path as filename, or one file with ?path=")
			}
			file, failure := h.receiveOnce(requested, part, user, seen, mode)
			_ = part.Close()
			if failure != nil {
				return h.uploadFailure(failure, tooLarge)
			}
			files = append(files, file)
		}
		if len(files) == 0 {
			return fail(http.StatusBadRequest, "the multipart body has no part named \"file\"")
		}
		// Replacing existing files can still fail (a full disk): those replaced before stay
		// replaced, the rest (new files included) are undone by the deferred discard.
		for _, file := range files {
			if failure := h.commit(file); failure != nil {
				return failure
			}
			written = append(written, file.written)
		}
		files = nil
	default:
		return fail(http.StatusBadRequest, "Content-Type %q: send multipart/form-data (parts named \"file\") or application/octet-stream with ?path=", r.Header.Get("Content-Type"))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(written)
	return nil
}

// uploadMode reads an upload's ?mode= (an extension of E2B's API, which has none; `fsb cp` keeps a
// file's permission bits with it): octal permission bits, 0 to 777, for every file of the upload.
// None given: a new file is 0644 less the daemon's umask, an existing one keeps its mode.
func uploadMode(text string) (*os.FileMode, *httpError) {
	if text == "" {
		return nil, nil
	}
	value, err := strconv.ParseUint(text, 8, 32)
	if err != nil || value > 0o777 {
		return nil, fail(http.StatusBadRequest, "mode %q is not a file mode: give its permission bits in octal, 0 to 777 (e.g. 755)", text)
	}
	mode := os.FileMode(value)
	return &mode, nil
}

func isMaxBytes(err error) bool {
	var maxBytes *http.MaxBytesError
	return errors.As(err, &maxBytes)
}

func (h *Handler) uploadFailure(failure *httpError, tooLarge *httpError) *httpError {
	if errors.Is(failure.err, errTooLarge) || isMaxBytes(failure.err) {
		return tooLarge
	}
	return failure
}

// partFileName is a part's filename with its directories (multipart.Part.FileName keeps only the base).
func partFileName(part *multipart.Part) string {
	_, parameters, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return parameters["filename"]
}

func (h *Handler) receiveOnce(requested string, content io.Reader, user *users.User, seen map[string]bool, mode *os.FileMode) (*received, *httpError) {
	path, failure := h.resolve(requested, user)
	if failure != nil {
		return nil, failure
	}
	if seen[path] {
		return nil, fail(http.StatusBadRequest, "two file parts write %s: one upload writes each path once", path)
	}
	seen[path] = true
	return h.receive(requested, content, user, mode)
}
