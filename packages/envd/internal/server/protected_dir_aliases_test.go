package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsrpc "fast-sandbox.io/envd/gen/filesystem"
	"fast-sandbox.io/envd/internal/server"
)

// The daemon's own directory stays out of listings however its parent is reached: /proc/self/root
// or a symlink anyone in the sandbox can make. Entries keep the path as it was asked for.
func TestListingsLeaveTheDaemonsOwnDirectoryOutThroughAnAliasOfItsParent(t *testing.T) {
	s := start(t, server.Options{})
	parent := filepath.Dir(s.protected)
	write(t, filepath.Join(parent, "visible.txt"), "x")
	up := filepath.Join(s.home, "up")
	if err := os.Symlink(parent, up); err != nil {
		t.Fatal(err)
	}
	for _, alias := range []string{"/proc/self/root" + parent, up} {
		listed, err := s.fs.ListDir(context.Background(), connect.NewRequest(&fsrpc.ListDirRequest{Path: alias, Depth: 3}))
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, entry := range listed.Msg.GetEntries() {
			paths = append(paths, entry.GetPath())
		}
		if len(paths) != 1 || paths[0] != filepath.Join(alias, "visible.txt") {
			t.Errorf("listing %s: %v, want only %s", alias, paths, filepath.Join(alias, "visible.txt"))
		}
	}
}

func TestWatchesLeaveTheDaemonsOwnDirectoryOutThroughAnAliasOfItsParent(t *testing.T) {
	s := start(t, server.Options{})
	parent := filepath.Dir(s.protected)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := s.fs.WatchDir(ctx, connect.NewRequest(&fsrpc.WatchDirRequest{Path: "/proc/self/root" + parent, Recursive: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetStart() == nil {
		t.Fatalf("first event %v (%v), want start", stream.Msg(), stream.Err())
	}
	write(t, filepath.Join(s.protected, "run", "secret"), "x")
	write(t, filepath.Join(parent, "visible.txt"), "x")
	for stream.Receive() {
		event := stream.Msg().GetFilesystem()
		if strings.Contains(event.GetName(), ".fast-sandbox") {
			t.Fatalf("the watch reports the daemon's own directory: %v", event)
		}
		if event.GetName() == "visible.txt" {
			return
		}
	}
	t.Fatalf("no event for visible.txt: %v", stream.Err())
}
