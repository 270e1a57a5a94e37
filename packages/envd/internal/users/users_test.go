package users

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestUsersAndGroupsComeFromTheImagesFiles(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	passwd := "# comment\nroot:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\nbroken:line\nnohome:x:7:7::::\n"
	group := "root:x:0:\nuser:x:1000:\nsudo:x:27:user\ndocker:x:999:other,user\n"
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	directory := Directory{Root: root}
	user, err := directory.Lookup("user")
	if err != nil {
		t.Fatal(err)
	}
	if user.UID != 1000 || user.GID != 1000 || user.Home != "/home/user" || !slices.Equal(user.Groups, []uint32{1000, 27, 999}) {
		t.Fatalf("user %+v", user)
	}
	if nohome, err := directory.Lookup("nohome"); err != nil || nohome.Home != "/" {
		t.Fatalf("nohome %+v %v", nohome, err)
	}
	if _, err := directory.Lookup("broken"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("broken line: %v", err)
	}
	if byID, err := directory.LookupID(0, 0); err != nil || byID.Name != "root" {
		t.Fatalf("uid 0: %+v %v", byID, err)
	}
	if anonymous, err := directory.LookupID(4321, 99); err != nil || anonymous.Name != "4321" || anonymous.Home != "/" {
		t.Fatalf("uid 4321: %+v %v", anonymous, err)
	}
	names := directory.Names()
	if names.User(1000) != "user" || names.Group(27) != "sudo" || names.User(55) != "55" {
		t.Fatalf("names %s %s %s", names.User(1000), names.Group(27), names.User(55))
	}
	if _, err := (Directory{Root: t.TempDir()}).Lookup("root"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("no /etc/passwd: %v", err)
	}
}
