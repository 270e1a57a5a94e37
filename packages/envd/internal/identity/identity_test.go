package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"fast-sandbox.io/envd/internal/users"
)

var tester = &users.User{Name: "tester", UID: 4242, GID: 4242, Home: "/", Groups: []uint32{4242, 5000}}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("switching users needs root: run these tests as root (like the rest of npm test)")
	}
}

// Every thread of the process is root again once As returned: a thread that kept the user's
// identity would run other requests as that user.
func requireAllThreadsRoot(t *testing.T) {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		status, err := os.ReadFile(task)
		if err != nil {
			continue // the thread ended meanwhile
		}
		for _, line := range strings.Split(string(status), "\n") {
			if fields := strings.Fields(line); len(fields) == 5 && (fields[0] == "Uid:" || fields[0] == "Gid:") && (fields[1] != "0" || fields[2] != "0" || fields[3] != "0" || fields[4] != "0") {
				t.Fatalf("%s: %q after As returned", task, line)
			}
		}
	}
}

func TestAsAppliesTheUsersPermissionsAndOwnership(t *testing.T) {
	requireRoot(t)
	// Not t.TempDir: its parent is private to root, and the tester must get in.
	root, err := os.MkdirTemp("", "fsb-identity-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(root, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(private, "secret"), []byte("root's"), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(root, "shared")
	if err := os.Mkdir(shared, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o770); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := os.Chown(shared, 0, 5000); err != nil { // a supplementary group of the tester's
		t.Fatal(err)
	}
	// A link the tester may follow, to where the tester may not write.
	if err := os.Symlink(filepath.Join(private, "planted"), filepath.Join(shared, "link")); err != nil {
		t.Fatal(err)
	}
	var readErr, linkErr, createErr error
	if err := As(tester, func() {
		_, readErr = os.ReadFile(filepath.Join(private, "secret"))
		linkErr = os.WriteFile(filepath.Join(shared, "link"), []byte("x"), 0o644)
		createErr = os.WriteFile(filepath.Join(shared, "mine"), []byte("x"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(readErr, os.ErrPermission) {
		t.Errorf("reading root's private file as the tester: %v, want permission denied", readErr)
	}
	if !errors.Is(linkErr, os.ErrPermission) {
		t.Errorf("writing through a link into root's private directory as the tester: %v, want permission denied", linkErr)
	}
	if _, err := os.Lstat(filepath.Join(private, "planted")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target was created: %v", err)
	}
	if createErr != nil {
		t.Fatalf("creating a file through a supplementary group: %v", createErr)
	}
	info, err := os.Stat(filepath.Join(shared, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	if stat := info.Sys().(*syscall.Stat_t); stat.Uid != tester.UID || stat.Gid != tester.GID {
		t.Fatalf("a file the tester created is %d:%d, want %d:%d", stat.Uid, stat.Gid, tester.UID, tester.GID)
	}
	requireAllThreadsRoot(t)
}

func TestAsLeavesRootAndTheDaemonsOtherThreadsAlone(t *testing.T) {
	requireRoot(t)
	var wait sync.WaitGroup
	for range 64 {
		wait.Add(1)
		go func() {
			defer wait.Done()
			var euid int
			if err := As(tester, func() { euid = syscall.Geteuid() }); err != nil || euid != int(tester.UID) {
				t.Errorf("As ran with euid %d (%v), want %d", euid, err, tester.UID)
			}
			// The same goroutine, and any other, is root again.
			if euid := syscall.Geteuid(); euid != 0 {
				t.Errorf("euid %d after As", euid)
			}
		}()
	}
	wait.Wait()
	root := &users.User{Name: "root", UID: 0, GID: 0}
	ran := false
	if err := As(root, func() { ran = syscall.Geteuid() == 0 }); err != nil || !ran {
		t.Fatalf("as root: ran as root %v (%v)", ran, err)
	}
	requireAllThreadsRoot(t)
}

func TestAPanicInAsReachesTheCaller(t *testing.T) {
	requireRoot(t)
	defer func() {
		if recover() != "boom" {
			t.Fatal("the panic was lost")
		}
		requireAllThreadsRoot(t)
	}()
	_ = As(tester, func() { panic("boom") })
}
