package filesystem

import "testing"

func TestUnescapeMountPathUndoesTheKernelsOctalEscapes(t *testing.T) {
	for escaped, want := range map[string]string{
		`/mnt/plain`:           "/mnt/plain",
		`/mnt/with\040space`:   "/mnt/with space",
		`/mnt/tab\011and\012n`: "/mnt/tab\tand\nn",
		`/mnt/back\134slash`:   `/mnt/back\slash`,
		`/mnt/cut\04`:          `/mnt/cut\04`,
		`/mnt/not\9octal`:      `/mnt/not\9octal`,
	} {
		if got := unescapeMountPath(escaped); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", escaped, got, want)
		}
	}
}

func TestMountPointsWithinListsTheRootOfItsOwnMountNamespace(t *testing.T) {
	found, err := mountPointsWithin("/")
	if err != nil {
		t.Fatal(err)
	}
	if len(found) == 0 || found[0] == "" {
		t.Fatalf("mount points within /: %v, want at least / itself", found)
	}
	none, err := mountPointsWithin("/no/such/directory/below/any/mount")
	if err != nil || len(none) != 0 {
		t.Fatalf("mount points within a path no mount is at: %v %v", none, err)
	}
}
