package filesystem

import (
	"io/fs"
	"testing"
)

func TestPermissionsReadLikeLs(t *testing.T) {
	cases := map[fs.FileMode]string{
		0o644:                              "-rw-r--r--",
		fs.ModeDir | 0o755:                 "drwxr-xr-x",
		fs.ModeSymlink | 0o777:             "lrwxrwxrwx",
		fs.ModeSetuid | 0o755:              "-rwsr-xr-x",
		fs.ModeSetgid | 0o640:              "-rw-r-S---",
		fs.ModeDir | fs.ModeSticky | 0o777: "drwxrwxrwt",
		fs.ModeNamedPipe | 0o600:           "prw-------",
	}
	for mode, want := range cases {
		if got := Permissions(mode); got != want {
			t.Errorf("Permissions(%v) = %s, want %s", mode, got, want)
		}
	}
	if modeBits(fs.ModeSetuid|fs.ModeSticky|0o755) != 0o5755 {
		t.Errorf("modeBits = %o", modeBits(fs.ModeSetuid|fs.ModeSticky|0o755))
	}
}
