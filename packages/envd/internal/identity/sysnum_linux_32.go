//go:build linux && (386 || arm)

package identity

import "syscall"

// The system calls that take 32-bit ids: on these architectures the plain ones take 16-bit ids.
const (
	sysSetresuid = syscall.SYS_SETRESUID32
	sysSetresgid = syscall.SYS_SETRESGID32
	sysSetgroups = syscall.SYS_SETGROUPS32
)
