package filesystem

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	rpc "fast-sandbox.io/envd/gen/filesystem"
	"fast-sandbox.io/envd/internal/paths"
	"fast-sandbox.io/envd/internal/users"
)

// inotifyInstances counts this process's inotify instances (its descriptors of anon_inode:inotify).
func inotifyInstances(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, entry := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", entry.Name())); err == nil && target == "anon_inode:inotify" {
			count++
		}
	}
	return count
}

// Every watch of the daemon shares one inotify instance: the kernel grants a user few (128 by
// default, counted across the host for a runc sandbox's root), so an instance per watch let one
// sandbox's watches refuse every other's. Two watches of one directory both get its events, and
// the directory stays watched until the last of them stops.
func TestWatchesShareOneInotifyInstanceAndEachGetsItsDirectorysEvents(t *testing.T) {
	root := t.TempDir()
	before := inotifyInstances(t)
	const count = 200
	var mu sync.Mutex
	seen := make([]map[string]bool, count)
	watches := make([]*watch, 0, count)
	for i := range count {
		seen[i] = map[string]bool{}
		w, err := startWatch(root, nil, i%2 == 0, false, paths.NewGuard(), users.Directory{Root: t.TempDir()}, func(event *rpc.FilesystemEvent) {
			mu.Lock()
			seen[i][event.GetName()+" "+event.GetType().String()] = true
			mu.Unlock()
		})
		if err != nil {
			t.Fatalf("watch %d: %v", i, err)
		}
		watches = append(watches, w)
	}
	defer func() {
		for _, w := range watches {
			w.stop()
		}
	}()
	if added := inotifyInstances(t) - before; added > 1 {
		t.Fatalf("%d watches took %d inotify instances, want at most one (the daemon's)", count, added)
	}
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for i := range count {
			if !seen[i]["f "+rpc.EventType_EVENT_TYPE_CREATE.String()] {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d watches did not get the create of f", missing, count)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The directory stays watched while one watch of it is left, and is forgotten with the last.
	for _, w := range watches[1:] {
		w.stop()
	}
	if err := os.WriteFile(filepath.Join(root, "g"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		got := seen[0]["g "+rpc.EventType_EVENT_TYPE_CREATE.String()]
		mu.Unlock()
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch left did not get the create of g")
		}
	}
	watches[0].stop()
	for dir := range snapshotDirs() {
		if strings.HasPrefix(dir, root) {
			t.Fatalf("%s is still watched after every watch of it stopped", dir)
		}
	}
}

// snapshotDirs copies the shared notifier's watched directories.
func snapshotDirs() map[string]int {
	sharedNotifier.mu.Lock()
	defer sharedNotifier.mu.Unlock()
	dirs := map[string]int{}
	for dir, watches := range sharedNotifier.dirs {
		dirs[dir] = len(watches)
	}
	return dirs
}
