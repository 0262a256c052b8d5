package testtree

import (
	"time"

	"golang.org/x/sys/unix"
)

func lchtimes(p string, when time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(when.UnixNano()), unix.NsecToTimespec(when.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
