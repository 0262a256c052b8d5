// Package local is the file:// store: a directory on a local or mounted
// filesystem (a PVC in Tekton). Writes go to a temporary file in the target
// directory, are synced, then renamed into place, so readers never see a
// partial object.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Bucket is a directory holding objects as files.
type Bucket struct {
	root string

	mu       sync.Mutex
	unsynced []string // committed staged files not yet synced
}

// staleStaging is how long a staged file may go unwritten before a later
// save takes it for the leftover of a killed one and removes it. A live
// save writes its staged packs continuously; an hour without a write is a
// dead one (or a stalled one, whose commit then fails: never a corrupt blob).
const staleStaging = time.Hour

// sweepStaging removes staged files that killed saves left behind.
func sweepStaging(dir string, now time.Time) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && now.Sub(fi.ModTime()) > staleStaging {
			os.Remove(filepath.Join(dir, e.Name())) //nolint:errcheck // best effort: another save may have swept it
		}
	}
}

var (
	_ store.Bucket = (*Bucket)(nil)
	_ store.Stager = (*Bucket)(nil)
	_ store.Syncer = (*Bucket)(nil)
)

// New returns the bucket rooted at dir, creating dir if needed.
func New(dir string) (*Bucket, error) {
	if dir == "" {
		return nil, errors.New("file store: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("file store %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("file store: creating %s: %w", abs, err)
	}
	return &Bucket{root: abs}, nil
}

// Open implements store.Opener for file:// URLs.
func Open(_ context.Context, u *url.URL, _ store.Options) (store.Store, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, store.BadURL(fmt.Errorf("file store URL %q: a host is not allowed; write file:///absolute/path", u.Redacted()))
	}
	if u.Path == "" || u.Path == "/" {
		return nil, store.BadURL(fmt.Errorf("file store URL %q has no directory; write file:///absolute/path", u.Redacted()))
	}
	b, err := New(u.Path)
	if err != nil {
		return nil, err
	}
	return store.NewObjectStore(b), nil
}

// String implements store.Bucket.
func (b *Bucket) String() string { return "file://" + b.root }

func (b *Bucket) path(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || path.Clean(name) != name || strings.HasPrefix(name, "..") || strings.Contains(name, "\\") {
		return "", fmt.Errorf("file store: invalid object name %q", name)
	}
	return filepath.Join(b.root, filepath.FromSlash(name)), nil
}

func mapErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return err
}

// Get implements store.Bucket.
func (b *Bucket) Get(_ context.Context, name string) (io.ReadCloser, error) {
	p, err := b.path(name)
	if err != nil {
		return nil, err
	}
	return openRegular(p)
}

var _ store.RangeBucket = (*Bucket)(nil)

// GetRange implements store.RangeBucket.
func (b *Bucket) GetRange(_ context.Context, name string, off int64) (io.ReadCloser, error) {
	p, err := b.path(name)
	if err != nil {
		return nil, err
	}
	f, err := openRegular(p)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openRegular opens the regular file p for reading, and nothing else: not
// a FIFO, socket or device that someone planted where an object goes (a
// read of a FIFO would block until a writer came), and not a symbolic
// link. It opens without blocking and without following a link, then
// checks what it opened.
func openRegular(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link, not a regular file: remove it (the store never follows links): %w", p, store.ErrNotFound)
		}
		return nil, mapErr(&fs.PathError{Op: "open", Path: p, Err: err})
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is %s, not a regular file: remove it: %w", p, fileType(st.Mode), store.ErrNotFound)
	}
	// Back to blocking reads: O_NONBLOCK means nothing for a regular file,
	// but the descriptor should not carry it.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return "an unusual file"
}

// Stat implements store.Bucket.
func (b *Bucket) Stat(_ context.Context, name string) (store.BlobInfo, error) {
	p, err := b.path(name)
	if err != nil {
		return store.BlobInfo{}, err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return store.BlobInfo{}, mapErr(err)
	}
	if !fi.Mode().IsRegular() {
		return store.BlobInfo{}, fmt.Errorf("%s is not a regular file: remove it: %w", p, store.ErrNotFound)
	}
	return store.BlobInfo{Size: fi.Size(), Modified: fi.ModTime()}, nil
}

// Put implements store.Bucket: temp file, fsync, rename, fsync dir.
func (b *Bucket) Put(ctx context.Context, name string, _ int64, r io.Reader) (err error) {
	p, err := b.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(p)+"-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = io.Copy(f, store.ContextReader(ctx, r)); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), p); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// stagingDir holds staged files, beside the objects of the format version
// this build writes (v1/staging).
func (b *Bucket) stagingDir() string {
	return filepath.Join(b.root, filepath.FromSlash(format.Prefix(format.Version)), "staging")
}

// Stage implements store.Stager: a temporary file in the bucket's staging
// directory, renamed into place by Commit.
func (b *Bucket) Stage(_ context.Context) (store.Staged, error) {
	dir := b.stagingDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return nil, err
	}
	return &staged{b: b, f: f}, nil
}

type staged struct {
	b *Bucket
	f *os.File
}

func (s *staged) Write(p []byte) (int, error) { return s.f.Write(p) }

func (s *staged) Abort() {
	s.f.Close()
	os.Remove(s.f.Name())
}

// Commit renames the file to name. It starts writing the file back to disk
// but does not wait: Sync, which the store calls before it publishes a ref,
// waits for every committed file at once, so that packing never stalls on
// a disk flush.
func (s *staged) Commit(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		s.Abort()
		return err
	}
	p, err := s.b.path(name)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(p), 0o755)
	}
	if err == nil {
		// Best effort: not every filesystem supports it, and Sync is the guarantee.
		unix.SyncFileRange(int(s.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE) //nolint:errcheck
		err = s.f.Chmod(0o644)
	}
	if err != nil {
		s.Abort()
		return err
	}
	if err := s.f.Close(); err != nil {
		os.Remove(s.f.Name())
		return err
	}
	if err := os.Rename(s.f.Name(), p); err != nil {
		os.Remove(s.f.Name())
		return err
	}
	s.b.mu.Lock()
	s.b.unsynced = append(s.b.unsynced, p)
	s.b.mu.Unlock()
	return nil
}

// Sync implements store.Syncer: it waits until every file committed since
// the last Sync, and its directory, is on disk.
func (b *Bucket) Sync(_ context.Context) error {
	// Once per save (Sync comes before every ref): what killed saves left.
	sweepStaging(b.stagingDir(), time.Now())
	b.mu.Lock()
	paths := b.unsynced
	b.unsynced = nil
	b.mu.Unlock()
	dirs := map[string]bool{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("syncing %s: %w", p, err)
		}
		dirs[filepath.Dir(p)] = true
	}
	for d := range dirs {
		syncDir(d)
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync() //nolint:errcheck // best effort: the rename is done
		d.Close()
	}
}

// List implements store.Bucket. It lists the directory that holds prefix.
func (b *Bucket) List(_ context.Context, prefix string) ([]string, error) {
	var names []string
	err := b.walk(prefix, func(name string, _ fs.DirEntry) error {
		names = append(names, name)
		return nil
	})
	return names, err
}

// ListInfo implements store.InfoLister: List with each file's size and mtime (one
// lstat per file, no read).
func (b *Bucket) ListInfo(_ context.Context, prefix string) ([]store.ObjectInfo, error) {
	var objs []store.ObjectInfo
	err := b.walk(prefix, func(name string, d fs.DirEntry) error {
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed since the directory was read
		}
		if err != nil {
			return err
		}
		objs = append(objs, store.ObjectInfo{Name: name, Size: fi.Size(), Modified: fi.ModTime()})
		return nil
	})
	return objs, err
}

// walk calls fn with the name and entry of every file whose name starts
// with prefix, walking the directory that holds prefix.
func (b *Bucket) walk(prefix string, fn func(name string, d fs.DirEntry) error) error {
	dirName, _ := path.Split(prefix)
	dir := b.root
	if dirName != "" {
		var err error
		if dir, err = b.path(strings.TrimSuffix(dirName, "/")); err != nil {
			return err
		}
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return filepath.SkipAll
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(b.root, p)
		if err != nil {
			return err
		}
		if name := filepath.ToSlash(rel); strings.HasPrefix(name, prefix) {
			return fn(name, d)
		}
		return nil
	})
}

// Delete implements store.Bucket.
func (b *Bucket) Delete(_ context.Context, name string) error {
	p, err := b.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
