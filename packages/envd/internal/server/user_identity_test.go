package server_test

import (
	"context"
	"encoding/base64"
	"errors"
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

// rootsFiles makes, beside the tester's home (where the tester may look, unlike t.TempDir), what
// only root may change: etc/ (0755) with profile.d/ and motd, and private/ (0700) with a secret.
func rootsFiles(t *testing.T, s *sandbox) (etc, private string) {
	t.Helper()
	base := filepath.Dir(filepath.Dir(s.home))
	etc, private = filepath.Join(base, "etc"), filepath.Join(base, "private")
	for _, dir := range []string{filepath.Join(etc, "profile.d"), private} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(etc, "motd"), "root's motd\n")
	write(t, filepath.Join(private, "secret"), "root's secret\n")
	return etc, private
}

// plant makes a symlink in the tester's home, owned by the tester, as code running as the tester would.
func plant(t *testing.T, s *sandbox, name, target string) {
	t.Helper()
	link := filepath.Join(s.home, name)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, testerUID, testerUID); err != nil {
		t.Fatal(err)
	}
}

func ownerOf(t *testing.T, path string) uint32 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Uid
}

// Code running as the default user plants `ln -s /etc/profile.d/x.sh ~/out.txt`; a client then
// writes out.txt as that user. Written as root, the upload would create /etc/profile.d/x.sh and
// give it to the user, and root's next login shell would run it. Written as the user, the kernel
// refuses, as it would the user's own `echo > ~/out.txt`.
func TestAnUploadAsAUserFollowsNoLinkToWhereTheUserMayNotWrite(t *testing.T) {
	s := start(t, server.Options{DefaultUser: "tester"})
	etc, _ := rootsFiles(t, s)
	plant(t, s, "out.txt", filepath.Join(etc, "profile.d", "x.sh"))
	plant(t, s, "motd.txt", filepath.Join(etc, "motd"))
	plant(t, s, "etc", etc)
	cases := []struct{ path, created string }{
		{"out.txt", filepath.Join(etc, "profile.d", "x.sh")}, // a dangling link: the upload would create its target
		{"motd.txt", ""}, // a link to root's file: the upload would replace it and give it away
		{"etc/profile.d/y.sh", filepath.Join(etc, "profile.d", "y.sh")},                // a link on the way
		{"etc/new/z.sh", filepath.Join(etc, "new")},                                    // a directory made on the way
		{filepath.Join(s.home, "etc", "motd"), ""},                                     // absolute, through the link
		{"~/etc/profile.d/../profile.d/w.sh", filepath.Join(etc, "profile.d", "w.sh")}, // however spelled
	}
	for _, c := range cases {
		for _, form := range []string{"octet-stream", "multipart"} {
			var response *http.Response
			if form == "multipart" {
				contentType, body := orderedMultipart(t, c.path, "echo pwned\n")
				response = must(upload(s.url+"/files", contentType, body, nil))
			} else {
				response = must(upload(s.url+"/files?path="+url.QueryEscape(c.path), "application/octet-stream", strings.NewReader("echo pwned\n"), nil))
			}
			got := decode[failure](t, response, http.StatusForbidden)
			if !strings.Contains(got.Message, "permission denied") {
				t.Errorf("%s (%s): %+v, want permission denied", c.path, form, got)
			}
			if c.created != "" {
				if _, err := os.Lstat(c.created); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s (%s): the upload made %s (%v)", c.path, form, c.created, err)
				}
			}
		}
	}
	if content, _ := os.ReadFile(filepath.Join(etc, "motd")); string(content) != "root's motd\n" || ownerOf(t, filepath.Join(etc, "motd")) != 0 {
		t.Fatalf("root's motd: %q, owner %d: the upload changed it", content, ownerOf(t, filepath.Join(etc, "motd")))
	}
	if left := stagingLeftovers(t, s.home, "out.txt", "motd.txt", "etc"); len(left) > 0 {
		t.Fatalf("the refused uploads left %v behind", left)
	}

	// What the user may write, the user still writes through a link: a file of the user's own.
	plant(t, s, "mine.txt", filepath.Join(s.home, "real.txt"))
	decode[[]written](t, must(upload(s.url+"/files?path=mine.txt", "application/octet-stream", strings.NewReader("mine"), nil)), http.StatusOK)
	if content, _ := os.ReadFile(filepath.Join(s.home, "real.txt")); string(content) != "mine" || ownerOf(t, filepath.Join(s.home, "real.txt")) != testerUID {
		t.Fatalf("the user's own link target: %q, owner %d", content, ownerOf(t, filepath.Join(s.home, "real.txt")))
	}
	// Root's requests keep acting as root.
	basicRoot := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("root:"))}}
	decode[[]written](t, must(upload(s.url+"/files?path="+url.QueryEscape(filepath.Join(etc, "profile.d", "root.sh")), "application/octet-stream", strings.NewReader("# root's"), basicRoot)), http.StatusOK)
}

// An upload as a user replaces only a file the user may write, and gives it to nobody: a file of
// root's the user may only read stays as it was, owner included.
func TestAnUploadAsAUserDoesNotTakeOverAFileTheUserMayNotWrite(t *testing.T) {
	s := start(t, server.Options{})
	target := filepath.Join(s.home, "roots.txt")
	write(t, target, precious)
	response := must(upload(s.url+"/files?path="+url.QueryEscape(target)+"&username=tester", "application/octet-stream", strings.NewReader("new content"), nil))
	decode[failure](t, response, http.StatusForbidden)
	if content, _ := os.ReadFile(target); string(content) != precious || ownerOf(t, target) != 0 {
		t.Fatalf("root's file in the tester's home: %q, owner %d", content, ownerOf(t, target))
	}
}

// Reads, listings, watches, moves and removals as a user reach only what the user may, however the
// path gets there.
func TestAUsersFileRequestsReachOnlyWhatTheUserMay(t *testing.T) {
	s := start(t, server.Options{DefaultUser: "tester"})
	etc, private := rootsFiles(t, s)
	plant(t, s, "secret.txt", filepath.Join(private, "secret"))
	plant(t, s, "private", private)
	plant(t, s, "etc", etc)
	secret := filepath.Join(private, "secret")

	response := must(plainClient.Get(s.url + "/files?path=secret.txt"))
	if got := decode[failure](t, response, http.StatusForbidden); !strings.Contains(got.Message, "permission denied") {
		t.Errorf("download of root's secret through a link: %+v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	denied := func(what string, err error) {
		t.Helper()
		if codeOf(err) != connect.CodePermissionDenied {
			t.Errorf("%s: %v, want permission_denied", what, err)
		}
	}
	_, err := s.fs.Stat(ctx, connect.NewRequest(&fsrpc.StatRequest{Path: "private/secret"}))
	denied("stat in root's private directory", err)
	_, err = s.fs.ListDir(ctx, connect.NewRequest(&fsrpc.ListDirRequest{Path: "private"}))
	denied("list root's private directory", err)
	_, err = s.fs.MakeDir(ctx, connect.NewRequest(&fsrpc.MakeDirRequest{Path: "etc/made"}))
	denied("make a directory in root's etc", err)
	_, err = s.fs.Move(ctx, connect.NewRequest(&fsrpc.MoveRequest{Source: "private/secret", Destination: "stolen"}))
	denied("move root's secret out", err)
	_, err = s.fs.Move(ctx, connect.NewRequest(&fsrpc.MoveRequest{Source: "etc/motd", Destination: "stolen"}))
	denied("move root's motd out", err)
	_, err = s.fs.Remove(ctx, connect.NewRequest(&fsrpc.RemoveRequest{Path: "private/secret"}))
	denied("remove root's secret", err)
	_, err = s.fs.Remove(ctx, connect.NewRequest(&fsrpc.RemoveRequest{Path: "etc/motd"}))
	denied("remove root's motd", err)
	_, err = s.fs.CreateWatcher(ctx, connect.NewRequest(&fsrpc.CreateWatcherRequest{Path: "private"}))
	denied("watch root's private directory", err)
	for _, path := range []string{secret, filepath.Join(etc, "motd")} {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
	for _, path := range []string{filepath.Join(etc, "made"), filepath.Join(s.home, "stolen")} {
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was made: %v", path, err)
		}
	}
	// Root's requests still reach it.
	if _, err := s.fs.Stat(ctx, asUser(&fsrpc.StatRequest{Path: secret}, "root")); err != nil {
		t.Fatalf("stat as root: %v", err)
	}
}
