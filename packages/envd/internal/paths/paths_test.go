package paths

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestAbsoluteResolvesAgainstHomeOrTheDefaultWorkdir(t *testing.T) {
	cases := []struct{ requested, base, want string }{
		{"/etc/../tmp/x", "", "/tmp/x"},
		{"~", "", "/home/u"},
		{"~/a/b", "/srv/app", "/home/u/a/b"},
		{"a/../b", "", "/home/u/b"},
		{"a", "/srv/app", "/srv/app/a"},
		{"../../..", "", "/"},
	}
	for _, c := range cases {
		got, err := Absolute(c.requested, "/home/u", c.base)
		if err != nil || got != c.want {
			t.Errorf("Absolute(%q, base %q) = %q, %v; want %q", c.requested, c.base, got, err, c.want)
		}
	}
	if _, err := Absolute("", "/home/u", ""); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty path: %v", err)
	}
}

func TestRealFollowsSymlinksTheWayTheKernelDoes(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "protected"), 0o755))
	must(os.Symlink("a/b", filepath.Join(root, "to-b")))                             // relative
	must(os.Symlink(filepath.Join(root, "protected"), filepath.Join(root, "a/abs"))) // absolute
	must(os.Symlink("../../protected/new", filepath.Join(root, "a/b/dangling")))     // dangling, with ..
	must(os.Symlink("loop", filepath.Join(root, "loop")))                            // a loop ends
	cases := map[string]string{
		"to-b/x":         "a/b/x",
		"to-b/../c":      "a/c", // ".." applies to the resolved a/b
		"a/abs/file":     "protected/file",
		"a/b/dangling":   "protected/new",
		"missing/to-b/x": "missing/to-b/x",
	}
	for path, want := range cases {
		if got := Real(root + "/" + path); got != filepath.Join(root, want) {
			t.Errorf("Real(%s) = %s, want %s", path, got, filepath.Join(root, want))
		}
	}
	_ = Real(filepath.Join(root, "loop", "x"))

	guard := NewGuard(filepath.Join(root, "protected"))
	for _, path := range []string{"protected", "a/abs/x", "a/b/dangling", "to-b/dangling"} {
		if err := guard.Check(filepath.Join(root, path)); !errors.Is(err, ErrProtected) {
			t.Errorf("Check(%s) = %v, want ErrProtected", path, err)
		}
	}
	for _, path := range []string{"a", "to-b/x", "protected-not"} {
		if err := guard.Check(filepath.Join(root, path)); err != nil {
			t.Errorf("Check(%s) = %v, want nil", path, err)
		}
	}
}

func TestHiddenLeavesOutTheProtectedDirectoryAndUploadsInProgress(t *testing.T) {
	guard := NewGuard("/.fast-sandbox")
	for path, want := range map[string]bool{
		"/.fast-sandbox":                            true,
		"/.fast-sandbox/run/envd.pid":               true,
		"/home/user/" + UploadStagingPrefix + "123": true,
		"/.fast-sandbox-not":                        false,
		"/home/user/notes.txt":                      false,
		"/home/user/.fsb-uploads":                   false,
	} {
		if got := guard.Hidden(path); got != want {
			t.Errorf("Hidden(%s) = %v, want %v", path, got, want)
		}
	}
}
