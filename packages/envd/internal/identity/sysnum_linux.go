//go:build linux && !386 && !arm

package identity

import "syscall"

// The system calls that take 32-bit ids (the only ones these architectures have).
const (
	sysSetresuid = syscall.SYS_SETRESUID
	sysSetresgid = syscall.SYS_SETRESGID
	sysSetgroups = syscall.SYS_SETGROUPS
)
