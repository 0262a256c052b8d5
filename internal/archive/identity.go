package archive

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"golang.org/x/sys/unix"
)

// FileID is what the kernel says of a file that user space cannot set: the
// device and inode (which file it is) and the status-change time (when its
// content or metadata last changed: utimensat can set the mtime, nothing but
// the kernel's clock sets the ctime). Together with size, mtime and mode it
// proves that a file was not touched since it was recorded; size and mtime
// alone prove nothing (restores, tar -x, cp -p and package tarballs set them).
type FileID struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Ctime int64  `json:"ctime"` // Unix nanoseconds
}

// IsZero reports whether id records nothing.
func (id FileID) IsZero() bool { return id == FileID{} }

func idOf(st *unix.Stat_t) FileID {
	return FileID{Dev: uint64(st.Dev), Ino: st.Ino, Ctime: st.Ctim.Nano()} //nolint:unconvert // Dev is not uint64 everywhere
}

// KernelNow is the clock the kernel stamps ctimes with (coarse real time):
// a change made after KernelNow returned t has a ctime of t or later. A
// record whose ctime is before t, taken after t, proves the file unchanged
// for as long as the file's ctime stays the same ("not racy", as git says).
func KernelNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts); err != nil {
		return 0 // then no record is trusted
	}
	return ts.Nano()
}

// HashFile returns the sha256 of the regular file at path, which must
// still be the file the walk saw (same device and inode, same size): it is
// opened without following a final symlink and checked before it is read.
func HashFile(path string, id FileID, size int64) (digest.Sum, error) {
	f, err := openRead(path)
	if err != nil {
		return digest.Sum{}, err
	}
	defer f.Close()
	if err := checkOpened(f, id, size); err != nil {
		return digest.Sum{}, fmt.Errorf("%s: %w", path, err)
	}
	return hashOpened(f, size)
}

// errChanged says a file is no longer the one recorded.
var errChanged = errors.New("it changed while being saved")

// checkOpened verifies that an opened file is the regular file id of size
// bytes (id zero: only the type and size are checked).
func checkOpened(f rawFile, id FileID, size int64) error {
	var st unix.Stat_t
	if err := sysFstat(int(f), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != size ||
		(!id.IsZero() && (uint64(st.Dev) != id.Dev || st.Ino != id.Ino)) { //nolint:unconvert // Dev is not uint64 everywhere
		return errChanged
	}
	return nil
}

func hashOpened(f rawFile, size int64) (digest.Sum, error) {
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.LimitReader(f, size), *bufp)
	if err != nil {
		return digest.Sum{}, err
	}
	if n != size {
		return digest.Sum{}, errChanged
	}
	return digest.SumOf(h), nil
}
