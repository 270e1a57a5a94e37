// Package users resolves the sandbox's users and groups from the image's own /etc/passwd and
// /etc/group (the daemon runs in the sandbox's mount namespace, so "/" is the sandbox's root).
// The files are read at every lookup: they are small, and a user added by a command (useradd) is
// seen by the next request.
package users

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

var (
	// ErrUnknownUser is returned for a user name that is not in /etc/passwd.
	ErrUnknownUser = errors.New("unknown user")
	// ErrUnknownGroup is returned for a group name that is not in /etc/group.
	ErrUnknownGroup = errors.New("unknown group")
)

// User is one account of the sandbox.
type User struct {
	Name string
	UID  uint32
	GID  uint32
	Home string
	// Groups are the user's supplementary groups (from /etc/group), the primary group included.
	Groups []uint32
}

// Directory reads the account files below Root ("/" in a sandbox, a temporary directory in tests).
type Directory struct {
	Root string
}

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

func (d Directory) file(name string) string {
	root := d.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, "etc", name)
}

// readColonFile calls each for every well-formed line (fields split on ':'), skipping comments.
func readColonFile(path string, minFields int, each func(fields []string)) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < minFields {
			continue
		}
		each(fields)
	}
	return scanner.Err()
}

func parseID(text string) (uint32, bool) {
	id, err := strconv.ParseUint(text, 10, 32)
	return uint32(id), err == nil
}

func (d Directory) passwd() ([]passwdEntry, error) {
	var entries []passwdEntry
	err := readColonFile(d.file("passwd"), 7, func(fields []string) {
		uid, okUID := parseID(fields[2])
		gid, okGID := parseID(fields[3])
		if okUID && okGID && fields[0] != "" {
			entries = append(entries, passwdEntry{name: fields[0], uid: uid, gid: gid, home: fields[5]})
		}
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return entries, err
}

func (d Directory) groups() ([]groupEntry, error) {
	var entries []groupEntry
	err := readColonFile(d.file("group"), 3, func(fields []string) {
		gid, ok := parseID(fields[2])
		if !ok || fields[0] == "" {
			return
		}
		var members []string
		if len(fields) > 3 && fields[3] != "" {
			members = strings.Split(fields[3], ",")
		}
		entries = append(entries, groupEntry{name: fields[0], gid: gid, members: members})
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return entries, err
}

func (d Directory) complete(entry passwdEntry) (*User, error) {
	user := &User{Name: entry.name, UID: entry.uid, GID: entry.gid, Home: entry.home, Groups: []uint32{entry.gid}}
	if user.Home == "" {
		user.Home = "/"
	}
	groups, err := d.groups()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.file("group"), err)
	}
	for _, group := range groups {
		for _, member := range group.members {
			if member == entry.name && group.gid != entry.gid {
				user.Groups = append(user.Groups, group.gid)
			}
		}
	}
	return user, nil
}

// Lookup finds a user by name.
func (d Directory) Lookup(name string) (*User, error) {
	entries, err := d.passwd()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.file("passwd"), err)
	}
	for _, entry := range entries {
		if entry.name == name {
			return d.complete(entry)
		}
	}
	return nil, fmt.Errorf("%w %q: it is not in the sandbox's /etc/passwd", ErrUnknownUser, name)
}

// LookupID finds a user by uid; a uid without an /etc/passwd entry (an image may run as any
// number) gets a user named after the number, in group gid, with home "/".
func (d Directory) LookupID(uid, gid uint32) (*User, error) {
	entries, err := d.passwd()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.file("passwd"), err)
	}
	for _, entry := range entries {
		if entry.uid == uid {
			return d.complete(entry)
		}
	}
	return &User{Name: strconv.FormatUint(uint64(uid), 10), UID: uid, GID: gid, Home: "/", Groups: []uint32{gid}}, nil
}

// LookupGroup finds a group's id by name; a number is taken as the id, whether a group has it or
// not, as runc and Docker take the GROUP of an image's `USER name:group`.
func (d Directory) LookupGroup(name string) (uint32, error) {
	if gid, ok := parseID(name); ok {
		return gid, nil
	}
	groups, err := d.groups()
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", d.file("group"), err)
	}
	for _, group := range groups {
		if group.name == name {
			return group.gid, nil
		}
	}
	return 0, fmt.Errorf("%w %q: it is not in the sandbox's /etc/group", ErrUnknownGroup, name)
}

// Names maps ids to names for listings (one read of each file for many entries).
type Names struct {
	users  map[uint32]string
	groups map[uint32]string
}

// Names reads both files once; missing or unreadable files give numeric names.
func (d Directory) Names() *Names {
	names := &Names{users: map[uint32]string{}, groups: map[uint32]string{}}
	if entries, err := d.passwd(); err == nil {
		for _, entry := range entries {
			if _, seen := names.users[entry.uid]; !seen {
				names.users[entry.uid] = entry.name
			}
		}
	}
	if entries, err := d.groups(); err == nil {
		for _, entry := range entries {
			if _, seen := names.groups[entry.gid]; !seen {
				names.groups[entry.gid] = entry.name
			}
		}
	}
	return names
}

// User is the name of uid, or the number when it has none.
func (n *Names) User(uid uint32) string {
	if name, ok := n.users[uid]; ok {
		return name
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// Group is the name of gid, or the number when it has none.
func (n *Names) Group(gid uint32) string {
	if name, ok := n.groups[gid]; ok {
		return name
	}
	return strconv.FormatUint(uint64(gid), 10)
}
