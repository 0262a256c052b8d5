package bake

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tekton-cache/tekton-cache/internal/archive"
)

// ErrWhiteout is wrapped by the error for a file whose name starts with
// ".wh.": a runtime reads it as a deletion, so no layer may hold one.
var ErrWhiteout = errors.New("a name starting with .wh. (a whiteout to a container runtime)")

// ErrUnsafeLink is wrapped by the error for a symlink that leaves the
// layer's destination (absolute, or with enough "..").
var ErrUnsafeLink = errors.New("a symlink that leaves its destination")

// Compression is how layers are compressed.
type Compression string

// The compressions: gzip works with every runtime; zstd needs an OCI base
// (containerd 1.5, Docker 23.0, CRI-O).
const (
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
)

// modeFile is the permission bits a file gets in a layer: the group's
// equal to the owner's (OpenShift runs a random UID in group 0), others
// never writing (an emptyDir is 0777), the special bits dropped.
func modeFile(perm fs.FileMode) int64 {
	p := int64(perm & 0o775)
	return p&^0o070 | (p&0o700)>>3
}

// modeDir is a directory's: as a file's, and group-writable so that the
// build adds to the cache.
func modeDir(perm fs.FileMode) int64 { return modeFile(perm) | 0o020 }

// checkName refuses a path with a component starting with ".wh.".
func checkName(p string) error {
	for _, c := range strings.Split(p, "/") {
		if strings.HasPrefix(c, ".wh.") {
			return fmt.Errorf("%s: %w: rename or delete it before baking", p, ErrWhiteout)
		}
	}
	return nil
}

// checkLink refuses a symlink at rel (relative to the destination) whose
// target leaves the destination.
func checkLink(rel, target string) error {
	if path.IsAbs(target) {
		return fmt.Errorf("%s -> %s: %w (an absolute target): make it relative", rel, target, ErrUnsafeLink)
	}
	j := path.Join(path.Dir(rel), target)
	if j == ".." || strings.HasPrefix(j, "../") {
		return fmt.Errorf("%s -> %s: %w", rel, target, ErrUnsafeLink)
	}
	return nil
}

// fileLayer is a layer compressed to a temporary file, its digests
// computed while it was written: the push reads it once, and nothing
// reads it to hash it.
type fileLayer struct {
	path         string
	digest, diff v1.Hash
	size, tarLen int64
	files        int
	mediaType    types.MediaType
	compression  Compression
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diff, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

// Uncompressed decompresses the file (ggcr's Extract and tests read it).
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	if l.compression == Zstd {
		d, err := zstd.NewReader(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		return &readCloser{Reader: d, close: func() error { d.Close(); return f.Close() }}, nil
	}
	g, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &readCloser{Reader: g, close: func() error { g.Close(); return f.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }

// countHash counts and hashes what goes through it.
type countHash struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// layerSet writes a source's entries as a sequence of layers, starting a
// new one before a file that would take the current one past split bytes
// of tar (a file larger than that gets a layer of its own).
type layerSet struct {
	dir       string // temporary directory the layer files go into
	name      string // for the file names
	split     int64
	mediaType types.MediaType
	comp      Compression

	layers []*fileLayer
	cur    *layerWriter
}

// layerWriter is the layer being written.
type layerWriter struct {
	f    *os.File
	raw  *countHash // compressed bytes, to the file
	tarw *countHash // tar bytes, to the compressor
	comp io.WriteCloser
	tw   *tar.Writer
	l    *fileLayer
}

func (s *layerSet) open() error {
	f, err := os.CreateTemp(s.dir, s.name+"-*.layer")
	if err != nil {
		return fmt.Errorf("baking: %w", err)
	}
	w := &layerWriter{f: f, l: &fileLayer{path: f.Name(), mediaType: s.mediaType, compression: s.comp}}
	w.raw = &countHash{w: f, h: sha256.New()}
	if s.comp == Zstd {
		// One goroutine and a fixed level: the same tar gives the same bytes.
		z, err := zstd.NewWriter(w.raw, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			f.Close()
			return err
		}
		w.comp = z
	} else {
		// No name or time in the gzip header: the same tar gives the same bytes.
		z, err := gzip.NewWriterLevel(w.raw, gzip.DefaultCompression)
		if err != nil {
			f.Close()
			return err
		}
		w.comp = z
	}
	w.tarw = &countHash{w: w.comp, h: sha256.New()}
	w.tw = tar.NewWriter(w.tarw)
	s.cur = w
	return nil
}

// close finishes the current layer.
func (s *layerSet) close() error {
	w := s.cur
	if w == nil {
		return nil
	}
	s.cur = nil
	err := w.tw.Close()
	if cerr := w.comp.Close(); err == nil {
		err = cerr
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("baking: writing a layer: %w", err)
	}
	w.l.size, w.l.tarLen = w.raw.n, w.tarw.n
	w.l.digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", w.raw.h.Sum(nil))}
	w.l.diff = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", w.tarw.h.Sum(nil))}
	s.layers = append(s.layers, w.l)
	return nil
}

// abort closes and forgets the current layer (its file goes with the
// temporary directory).
func (s *layerSet) abort() {
	if s.cur != nil {
		s.cur.f.Close()
		s.cur = nil
	}
}

// tarSize is what a header and size bytes of content take in a tar stream
// (a PAX header for a long name included).
func tarSize(name string, size int64) int64 {
	n := int64(512) + (size+511)/512*512
	if len(name) > 100 {
		n += 1024 + int64(len(name)+511)/512*512
	}
	return n
}

// add writes one header and, for a file, its size bytes of content from r.
func (s *layerSet) add(hdr *tar.Header, r io.Reader) error {
	if s.cur != nil && hdr.Typeflag == tar.TypeReg && s.split > 0 &&
		s.cur.tarw.n > 1024 && s.cur.tarw.n+tarSize(hdr.Name, hdr.Size) > s.split {
		if err := s.close(); err != nil {
			return err
		}
	}
	if s.cur == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	if hdr.Typeflag == tar.TypeReg {
		s.cur.l.files++
	}
	if err := s.cur.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("baking %s: %w", hdr.Name, err)
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	n, err := io.Copy(s.cur.tw, io.LimitReader(r, hdr.Size))
	if err != nil {
		return fmt.Errorf("baking %s: %w", hdr.Name, err)
	}
	if n == hdr.Size {
		// One byte more means the file grew since it was listed.
		var one [1]byte
		if m, _ := r.Read(one[:]); m > 0 {
			n++
		}
	}
	if n != hdr.Size {
		return fmt.Errorf("baking %s: %d bytes read where %d were expected: it changed while being baked; bake again when the build is done", hdr.Name, n, hdr.Size)
	}
	return nil
}

// header is the tar header of an entry at rel under dest: owner 0:0, no
// user or group name, no access or change time, the mode policy of
// modeFile and modeDir, mtime to the second (or fixed when not zero).
func header(dest, rel string, typ byte, perm fs.FileMode, mtime time.Time, size int64, link string) *tar.Header {
	name := strings.TrimPrefix(path.Join(dest, rel), "/")
	h := &tar.Header{Typeflag: typ, Name: name, ModTime: mtime.Truncate(time.Second), Format: tar.FormatPAX}
	switch typ {
	case tar.TypeDir:
		h.Name += "/"
		h.Mode = modeDir(perm)
	case tar.TypeSymlink:
		h.Mode = 0o777
		h.Linkname = link
	default:
		h.Mode = modeFile(perm)
		h.Size = size
	}
	return h
}

// walkDir writes the directory src (the destination dest in the image)
// into s: dest itself, then every entry under it depth first in name
// order, leaving out the restore state and save's temporary files. Symlinks are kept when they stay inside dest; other special
// files (sockets, pipes, devices) are left out, and logged.
func walkDir(s *layerSet, src, dest string, fixed time.Time, logf func(string, ...any)) error {
	root, err := filepath.EvalSymlinks(src)
	if err != nil {
		return fmt.Errorf("--layer %s: %w", src, err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("--layer %s: %w", src, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("--layer %s: not a directory", src)
	}
	mtime := func(fi fs.FileInfo) time.Time {
		if !fixed.IsZero() {
			return fixed
		}
		return fi.ModTime()
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("--layer %s: %w", src, err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			rel = ""
		}
		if rel == archive.StateFileName || strings.HasPrefix(d.Name(), archive.TempPrefix) {
			// A restore's or save's own files, never part of the cache.
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if err := checkName(path.Join(dest, rel)); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("--layer %s: %w", src, err)
		}
		switch {
		case fi.IsDir():
			return s.add(header(dest, rel, tar.TypeDir, fi.Mode().Perm(), mtime(fi), 0, ""), nil)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("--layer %s: %w", src, err)
			}
			if err := checkLink(rel, target); err != nil {
				return fmt.Errorf("--layer %s: %w", src, err)
			}
			return s.add(header(dest, rel, tar.TypeSymlink, 0, mtime(fi), 0, target), nil)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return fmt.Errorf("--layer %s: %w", src, err)
			}
			defer f.Close()
			return s.add(header(dest, rel, tar.TypeReg, fi.Mode().Perm(), mtime(fi), fi.Size(), ""), f)
		default:
			logf("bake: left out %s: not a file, directory or symlink (%s)", p, fi.Mode().Type())
			return nil
		}
	})
}
