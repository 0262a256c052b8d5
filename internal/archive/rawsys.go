//go:build linux && (amd64 || arm64 || riscv64 || ppc64le || s390x)

package archive

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysFstatatNUL is fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) for a name
// that already ends in a NUL (as getdents gives it): unix.Fstatat copies
// its string to add one, an allocation for every entry a walk visits.
func sysFstatatNUL(dirfd int, name *byte, st *unix.Stat_t) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_NEWFSTATAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)), uintptr(unsafe.Pointer(st)), unix.AT_SYMLINK_NOFOLLOW, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return counted(kStat, e)
		}
		return counted(kStat, nil)
	}
}
