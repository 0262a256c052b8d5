//go:build !(linux && (amd64 || arm64 || riscv64 || ppc64le || s390x))

package archive

import (
	"golang.org/x/sys/unix"
)

// sysFstatatNUL is fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) for a name
// that ends in a NUL, through unix.Fstatat where the raw call differs.
func sysFstatatNUL(dirfd int, name *byte, st *unix.Stat_t) error {
	return sysFstatat(dirfd, unix.BytePtrToString(name), st, unix.AT_SYMLINK_NOFOLLOW)
}
