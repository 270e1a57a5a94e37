// Package identity runs the file system operations of a request as the user the request acts as.
//
// The daemon runs as root, so that it can act as any user of the sandbox. Were the operations of a
// request for another user made as root, the kernel would check nothing on the way: a symlink the
// sandbox's own code planted (~/out.txt → /etc/profile.d/x.sh) would take an upload where that user
// may not write, and hand root's file to the user; a path through a directory the user cannot
// enter would be listed, read, moved or removed all the same. Made as the user, the kernel applies
// the user's permissions to every component of every path, symlink targets included, as it would
// to the user's own `cp` or `rm`, and what the operation creates is the user's from the start.
//
// The identity is switched for one OS thread only: the goroutine that runs the operation is locked
// to its thread, whose effective uid and gid and supplementary groups become the user's through
// the raw system calls (Go's syscall.Setresuid and friends change every thread of the process, and
// the daemon's other requests must stay root). Not setfsuid: gVisor does not implement it
// (ENOSYS), while Linux and gVisor both check file access with the effective ids. The real and
// saved uid stay root, which is what lets the thread become root again afterwards; a thread that
// cannot is never used again (it ends with its goroutine, still locked).
package identity

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"fast-sandbox.io/envd/internal/users"
)

// Switches tells whether As switches to user: the daemon is root and the user is not. Root's own
// requests, and every request of a daemon that is not root (it acts only as itself), run as the
// daemon.
func Switches(user *users.User) bool {
	return user != nil && user.UID != 0 && syscall.Geteuid() == 0
}

// As runs operation with user's identity (see the package's comment) and returns once it ran. Only
// what operation does on its own goroutine runs as the user: it must not hand work to other
// goroutines. It returns an error, and does not run operation, when the thread could not take the
// identity on. A panic of operation is raised again in the caller.
func As(user *users.User, operation func()) error {
	if !Switches(user) {
		operation()
		return nil
	}
	type outcome struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan outcome, 1)
	go func() {
		runtime.LockOSThread()
		original, err := current()
		if err != nil {
			runtime.UnlockOSThread()
			done <- outcome{err: fmt.Errorf("reading the daemon's own identity: %w", err)}
			return
		}
		if err := become(user); err != nil {
			if restore(original) == nil {
				runtime.UnlockOSThread()
			}
			done <- outcome{err: fmt.Errorf("acting as %s (uid %d, gid %d): %w", user.Name, user.UID, user.GID, err)}
			return
		}
		result := outcome{}
		func() {
			defer func() {
				if value := recover(); value != nil {
					result = outcome{panicked: true, value: value}
				}
			}()
			operation()
		}()
		// Unlocked only once root again: else the thread ends with this goroutine.
		if restore(original) == nil {
			runtime.UnlockOSThread()
		}
		done <- result
	}()
	result := <-done
	if result.panicked {
		panic(result.value)
	}
	return result.err
}

// thread is what As changes of a thread, to give it back.
type thread struct {
	egid   uint32
	groups []uint32
}

func current() (thread, error) {
	groups, err := syscall.Getgroups()
	if err != nil {
		return thread{}, err
	}
	original := thread{egid: uint32(syscall.Getegid())}
	for _, group := range groups {
		original.groups = append(original.groups, uint32(group))
	}
	return original, nil
}

// keep is -1 to setresuid and setresgid: that id stays as it is.
const keep = ^uintptr(0)

// become gives this thread user's groups, then gid, then uid: the groups and the gid need root,
// which the uid takes away.
func become(user *users.User) error {
	groups := user.Groups
	if len(groups) == 0 {
		groups = []uint32{user.GID}
	}
	if err := setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if _, _, errno := syscall.RawSyscall(sysSetresgid, keep, uintptr(user.GID), keep); errno != 0 {
		return fmt.Errorf("setresgid: %w", errno)
	}
	if _, _, errno := syscall.RawSyscall(sysSetresuid, keep, uintptr(user.UID), keep); errno != 0 {
		return fmt.Errorf("setresuid: %w", errno)
	}
	return nil
}

// restore makes this thread root again: the uid first (which gives back root's capabilities), then
// the gid and groups.
func restore(original thread) error {
	if _, _, errno := syscall.RawSyscall(sysSetresuid, keep, 0, keep); errno != 0 {
		return errno
	}
	if _, _, errno := syscall.RawSyscall(sysSetresgid, keep, uintptr(original.egid), keep); errno != 0 {
		return errno
	}
	return setgroups(original.groups)
}

// setgroups sets this thread's supplementary groups only (syscall.Setgroups sets every thread's).
func setgroups(groups []uint32) error {
	var pointer unsafe.Pointer
	if len(groups) > 0 {
		pointer = unsafe.Pointer(&groups[0])
	}
	if _, _, errno := syscall.RawSyscall(sysSetgroups, uintptr(len(groups)), uintptr(pointer), 0); errno != 0 {
		return errno
	}
	return nil
}
