package filesystem

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	rpc "fast-sandbox.io/envd/gen/filesystem"
	"fast-sandbox.io/envd/internal/auth"
	"fast-sandbox.io/envd/internal/state"
	"fast-sandbox.io/envd/internal/users"
)

// A deep listing of a large tree would hold every entry in memory and send them all at once: past
// the bound it is refused, with what to do instead.
func TestAListingPastItsBoundIsRefusedSayingToLowerTheDepth(t *testing.T) {
	root := t.TempDir()
	for i := range 3 {
		dir := filepath.Join(root, fmt.Sprintf("dir%d", i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range 3 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file%d", j)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := state.New()
	service := &Service{Auth: auth.New(users.Directory{Root: t.TempDir()}, st), State: st, MaxListEntries: 10}
	// 3 directories, then 9 files below them: 12 entries at depth 2.
	_, err := service.ListDir(context.Background(), connect.NewRequest(&rpc.ListDirRequest{Path: root, Depth: 2}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "more than 10 entries") || !strings.Contains(err.Error(), "lower depth") {
		t.Fatalf("listing 12 entries past a bound of 10: %v, want resource_exhausted saying to lower the depth", err)
	}
	shallow, err := service.ListDir(context.Background(), connect.NewRequest(&rpc.ListDirRequest{Path: root, Depth: 1}))
	if err != nil || len(shallow.Msg.GetEntries()) != 3 {
		t.Fatalf("depth 1: %v, %v", shallow, err)
	}
	service.MaxListEntries = 12
	if exact, err := service.ListDir(context.Background(), connect.NewRequest(&rpc.ListDirRequest{Path: root, Depth: 2})); err != nil || len(exact.Msg.GetEntries()) != 12 {
		t.Fatalf("12 entries with a bound of 12: %v", err)
	}
}
