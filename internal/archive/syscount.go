package archive

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The file system calls of the walk, the packer and the extractor go
// through these wrappers, which count them by kind when counting is on (a
// test turns it on): tests assert how many calls a tree costs, per file and
// per directory, never how long it takes. Off, the cost is one predictable
// branch a call.

// sysKind is a kind of system call counted.
type sysKind int

const (
	kOpen     sysKind = iota // open, openat (files and directories)
	kMkdir                   // mkdirat
	kStat                    // fstat, fstatat
	kChmod                   // fchmod, fchmodat
	kUtimes                  // utimensat
	kClose                   // close
	kGetdents                // getdents64
	kRead                    // read
	kKinds
)

var (
	countingSys bool
	sysCount    [kKinds]atomic.Int64
)

func countSys(k sysKind) {
	if countingSys {
		sysCount[k].Add(1)
	}
}

func sysOpenat(dirfd int, name string, flags int, mode uint32) (int, error) {
	fd, err := unix.Openat(dirfd, name, flags, mode)
	counted(kOpen, err)
	return fd, err
}

func sysMkdirat(dirfd int, name string, mode uint32) error {
	return counted(kMkdir, unix.Mkdirat(dirfd, name, mode))
}

func sysFstat(fd int, st *unix.Stat_t) error {
	return counted(kStat, unix.Fstat(fd, st))
}

func sysFstatat(dirfd int, name string, st *unix.Stat_t, flags int) error {
	return counted(kStat, unix.Fstatat(dirfd, name, st, flags))
}

func sysFchmod(fd int, mode uint32) error {
	return counted(kChmod, unix.Fchmod(fd, mode))
}

func sysFchmodat(dirfd int, name string, mode uint32) error {
	return counted(kChmod, unix.Fchmodat(dirfd, name, mode, 0))
}

func sysUtimesAt(dirfd int, name string, ts []unix.Timespec) error {
	return counted(kUtimes, unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW))
}

// sysFutimens sets the times of the open file fd (utimensat with no name,
// as futimens does; every Linux has the call): by name, utimensat
// looks the name up again.
func sysFutimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return counted(kUtimes, e)
	}
	return counted(kUtimes, nil)
}

func sysClose(fd int) error {
	return counted(kClose, unix.Close(fd))
}

func sysReadDirent(fd int, buf []byte) (int, error) {
	n, err := unix.ReadDirent(fd, buf)
	counted(kGetdents, err)
	return n, err
}

// counted counts a call of kind k that returned err, unless a signal
// interrupted it (EINTR: the caller makes it again, and the runtime's
// preemption signals make that depend on the machine's load), and
// returns err.
func counted(k sysKind, err error) error {
	if err != unix.EINTR {
		countSys(k)
	}
	return err
}
