package filesystem

import (
	"fmt"
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

// A recursive watch watches a new directory only once its create event reached the watch: what
// is created in it before that (a file written with its parent directories) has no event of its
// own. Each such entry gets a create event when the directory is taken on, and the directory
// itself still gets one only.
func TestARecursiveWatchReportsWhatIsCreatedInADirectoryJustCreated(t *testing.T) {
	root := t.TempDir()
	var mu sync.Mutex
	events := map[string]int{}
	changed := make(chan struct{}, 1)
	w, err := startWatch(root, nil, true, false, paths.NewGuard(filepath.Join(root, "protected")), users.Directory{Root: t.TempDir()}, func(event *rpc.FilesystemEvent) {
		mu.Lock()
		events[event.GetName()+" "+event.GetType().String()]++
		mu.Unlock()
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.stop()

	const pairs = 50
	var want []string
	for i := range pairs {
		dir := filepath.Join(root, fmt.Sprintf("d%d", i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("d%d/f", i))
	}
	// Deeper: every level below the new directory, and nothing of what the guard hides.
	if err := os.MkdirAll(filepath.Join(root, "n", "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"n/a/b/f", "n/a/" + paths.UploadStagingPrefix + "x", "protected/secret"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, file)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, file), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want = append(want, "n/a", "n/a/b", "n/a/b/f")

	missing := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var missing []string
		for _, name := range want {
			if events[name+" EVENT_TYPE_CREATE"] == 0 {
				missing = append(missing, name)
			}
		}
		return missing
	}
	timeout := time.After(5 * time.Second)
	for len(missing()) > 0 {
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no create event for %v", missing())
		}
	}
	time.Sleep(100 * time.Millisecond) // for events that should not come
	mu.Lock()
	defer mu.Unlock()
	for i := range pairs {
		if created := events[fmt.Sprintf("d%d EVENT_TYPE_CREATE", i)]; created != 1 {
			t.Errorf("d%d: %d create events, want 1", i, created)
		}
	}
	for event := range events {
		name, _, _ := strings.Cut(event, " ")
		if strings.Contains(name, paths.UploadStagingPrefix) || name == "protected" || strings.HasPrefix(name, "protected/") {
			t.Errorf("an event for what the guard hides: %s", event)
		}
	}
}
