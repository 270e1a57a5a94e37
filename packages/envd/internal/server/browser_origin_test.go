package server_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	fsrpc "fast-sandbox.io/envd/gen/filesystem"
	"fast-sandbox.io/envd/internal/server"
)

const page = "https://evil.example"

func preflight(t *testing.T, url string) *http.Response {
	t.Helper()
	request, err := http.NewRequest(http.MethodOptions, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	request.Header.Set("Origin", page)
	request.Header.Set("Access-Control-Request-Method", "POST")
	request.Header.Set("Access-Control-Request-Headers", "content-type, authorization")
	return must(http.DefaultClient.Do(request))
}

// A web page in a browser that can reach sandbox addresses must not drive a daemon that has no
// access token: whatever the page sends carries Origin (its preflights too), and is refused. A
// multipart POST /files needs no preflight at all, so refusing preflights alone would not do.
func TestBrowsersAreRefusedWhileThereIsNoAccessToken(t *testing.T) {
	s := start(t, server.Options{})
	got := decode[failure](t, preflight(t, s.url+"/process.Process/Start"), http.StatusForbidden)
	if !strings.Contains(got.Message, "browsers may not call") || !strings.Contains(got.Message, "access token") {
		t.Fatalf("preflight: %+v, want a refusal that says why", got)
	}
	target := filepath.Join(s.home, "from-a-page.txt")
	contentType, body := orderedMultipart(t, target, "written by a web page")
	got = decode[failure](t, must(upload(s.url+"/files", contentType, body, http.Header{"Origin": {page}})), http.StatusForbidden)
	if !strings.Contains(got.Message, "browsers may not call") {
		t.Fatalf("a simple multipart POST from a page: %+v", got)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the page's upload was written: %v", err)
	}
	// Origin "null" (a sandboxed iframe, a file: page) is a browser's too.
	null := connect.NewRequest(&fsrpc.StatRequest{Path: "~"})
	null.Header().Set("Origin", "null")
	if _, err := s.fs.Stat(context.Background(), null); codeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "browsers may not call") {
		t.Fatalf("an RPC from a page: %v, want permission_denied saying why", err)
	}
	health, err := http.NewRequest(http.MethodGet, s.url+"/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	health.Header.Set("Origin", page)
	decode[failure](t, must(http.DefaultClient.Do(health)), http.StatusForbidden)

	// Clients that are not browsers (the SDKs on a server, the proxy, which strips Origin) are served.
	if response := must(http.Get(s.url + "/health")); response.StatusCode != http.StatusNoContent {
		t.Fatalf("health without Origin: %d", response.StatusCode)
	}
	contentType, body = orderedMultipart(t, target, "written by a client")
	decode[[]written](t, must(upload(s.url+"/files", contentType, body, nil)), http.StatusOK)
}

// Once /init has set an access token, browsers are served as before (E2B's SDK runs in browsers):
// the token guards the daemon.
func TestBrowsersAreServedOnceThereIsAnAccessToken(t *testing.T) {
	s := start(t, server.Options{})
	initialize := must(upload(s.url+"/init", "application/json", strings.NewReader(`{"accessToken":"secret-token"}`), nil))
	initialize.Body.Close()
	if initialize.StatusCode != http.StatusNoContent {
		t.Fatalf("/init: %d", initialize.StatusCode)
	}
	response := preflight(t, s.url+"/process.Process/Start")
	response.Body.Close()
	if response.StatusCode != http.StatusNoContent || response.Header.Get("Access-Control-Allow-Origin") != "*" || response.Header.Get("Access-Control-Allow-Headers") != "content-type, authorization" {
		t.Fatalf("preflight with a token set: %d %v", response.StatusCode, response.Header)
	}
	stat := connect.NewRequest(&fsrpc.StatRequest{Path: s.home})
	stat.Header().Set("Origin", page)
	stat.Header().Set("X-Access-Token", "secret-token")
	if _, err := s.fs.Stat(context.Background(), stat); err != nil {
		t.Fatalf("an RPC from a page with the token: %v", err)
	}
	withoutToken := connect.NewRequest(&fsrpc.StatRequest{Path: s.home})
	withoutToken.Header().Set("Origin", page)
	if _, err := s.fs.Stat(context.Background(), withoutToken); codeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("an RPC from a page without the token: %v, want unauthenticated", err)
	}
}
