package archive

import (
	"io"

	"golang.org/x/sys/unix"
)

// rawFile reads or writes a file descriptor with plain system calls. For
// the tens of thousands of small files of a cache, os.File costs three more
// system calls a file (fcntl, and an epoll registration that regular files
// refuse); this is a third of the system time of a save.
type rawFile int

// readFlags open a file to read what the walk or a restore saw there:
// never through a final symlink, and never blocking on a fifo or a device
// swapped in at its path (what was opened is then checked, and refused).
const readFlags = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK

func openRead(path string) (rawFile, error) {
	for {
		fd, err := sysOpenat(unix.AT_FDCWD, path, readFlags, 0)
		if err == unix.EINTR {
			continue
		}
		return rawFile(fd), err
	}
}

// Read implements io.Reader.
func (f rawFile) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(f), p)
		counted(kRead, err)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(p) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write implements io.Writer.
func (f rawFile) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := unix.Write(int(f), p[written:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

func (f rawFile) Close() error { return sysClose(int(f)) }
