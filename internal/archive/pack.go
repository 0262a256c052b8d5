package archive

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// Compression settings are part of the format: the same tree must give the
// same packs. SpeedFastest (about zstd level 1) took 28% less CPU than
// SpeedDefault (level 3) on a Go cache for 5% more bytes (docs/BENCHMARKS.md).
var encoderPool = sync.Pool{New: func() any {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), // every byte is covered by sha256 already
		zstd.WithZeroFrames(true),
	)
	if err != nil {
		panic(err)
	}
	return enc
}}

// PackFile is a file to put into a pack.
type PackFile struct {
	// Entry is updated with the file's Digest, Offset and Pack.
	Entry *Entry
	// Name is the entry's name inside the pack (Index.TarName).
	Name string
	// Source is the file's path on disk.
	Source string
	// ID is the file as the walk saw it: packing refuses another file
	// (swapped in, or a path that now resolves elsewhere). Zero: not checked.
	ID FileID
}

// countWriter counts bytes on their way to w.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// copyBufPool holds the buffers files are copied through.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// WritePack writes files, in order, as a zstd-compressed tar stream to w,
// hashing each file's content as it goes. It sets each entry's Digest,
// Offset and Pack (to packIndex). A file whose size changed since it was
// walked is an error: the index would lie.
func WritePack(w io.Writer, packIndex int, files []PackFile) error {
	enc := encoderPool.Get().(*zstd.Encoder)
	defer encoderPool.Put(enc)
	enc.Reset(w)
	cw := &countWriter{w: enc}
	tw := tar.NewWriter(cw)
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	h := sha256.New()
	fh := io.MultiWriter(tw, h)
	var dir sourceDir
	defer dir.close()
	for _, f := range files {
		e := f.Entry
		if err := tw.Flush(); err != nil {
			return err
		}
		e.Offset = cw.n
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.Name,
			Mode:     int64(e.Mode),
			Size:     e.Size,
			ModTime:  time.Unix(0, e.MTime).Truncate(time.Second),
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("packing %s: %w", f.Source, err)
		}
		src, err := dir.open(f.Source)
		if err != nil {
			return fmt.Errorf("packing %s: %w", f.Source, err)
		}
		h.Reset()
		n, err := copyFile(fh, src, e.Size, *bufp)
		// Checked once read: the file the walk saw (its device and inode),
		// still regular and of its size. A file swapped in is refused
		// whatever was read from it (at most one byte more than the
		// size), and so is one that grew or shrank, during the read too.
		if cerr := checkOpened(src, f.ID, e.Size); cerr != nil {
			err = cerr
		} else if err == nil && n != e.Size {
			err = errChanged
		}
		src.Close()
		if errors.Is(err, errChanged) {
			return fmt.Errorf("packing %s: %w (size was %d): save again when the build is done", f.Source, err, e.Size)
		}
		if err != nil {
			return fmt.Errorf("packing %s: %w", f.Source, err)
		}
		e.Digest = digest.SumOf(h)
		e.Pack = packIndex
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return enc.Close()
}

// copyFile copies the open file src, which should hold size bytes, to w
// through buf, and returns the bytes it read: size, or one more when the
// file grew (then nothing past size is written), or fewer when it shrank.
// Each read asks for one byte past what is left, so the read that ends
// the file is also the one that says it ends: a file that fits in buf is
// read in one system call, not two (the read that returns 0). That short
// read is not proof of the end on its own; the caller's fstat of the file
// after the copy (same size, same file) is.
func copyFile(w io.Writer, src rawFile, size int64, buf []byte) (int64, error) {
	var n int64
	for n <= size {
		want := min(int64(len(buf)), size+1-n)
		m, err := src.Read(buf[:want])
		if n+int64(m) > size {
			return n + int64(m), nil
		}
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
		}
		switch {
		case err == io.EOF:
			return n, nil
		case err != nil:
			return n, err
		case n == size && int64(m) < want:
			return n, nil
		}
	}
	return n, nil
}

// sourceDir is the directory the files being packed are opened in: the
// files of a pack come in the index's order, a directory's together, so
// each is opened by its name in a descriptor of its directory instead of
// by its whole path (a lookup of every component, for every file).
type sourceDir struct {
	path string
	fd   int
	ok   bool
}

// open opens the file at path (absolute, or relative to the working
// directory) for reading, without following a final symlink and without
// blocking on a fifo swapped in.
func (d *sourceDir) open(path string) (rawFile, error) {
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return openRead(path)
	}
	dir, name := path[:i], path[i+1:]
	if dir == "" {
		dir = "/"
	}
	if !d.ok || d.path != dir {
		d.close()
		fd, err := sysOpenat(unix.AT_FDCWD, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		d.path, d.fd, d.ok = dir, fd, true
	}
	for {
		fd, err := sysOpenat(d.fd, name, readFlags, 0)
		if err == unix.EINTR {
			continue
		}
		return rawFile(fd), err
	}
}

func (d *sourceDir) close() {
	if d.ok {
		sysClose(d.fd)
		d.ok = false
	}
}

// tarBlock is the tar format's block.
const tarBlock = 512

// PackSlack is what a pack's tar stream holds besides its files, at most:
// the end-of-archive blocks, with a little slack.
const PackSlack = 4 * tarBlock

// TarBytes is the most bytes WritePack writes for the file e in a pack: a
// header, a PAX header for a long name (TarName's, whose length it counts
// without making it), and the content in 512-byte blocks.
func (x *Index) TarBytes(e *Entry) int64 {
	up := func(n int64) int64 { return (n + tarBlock - 1) / tarBlock * tarBlock }
	name := len(e.Path)
	if len(x.Roots) > 1 { // "<root>/<path>"
		name += len(strconv.Itoa(e.Root)) + 1
	}
	return 3*tarBlock + up(int64(name)+64) + up(e.Size)
}

// packBytes gives, per pack, the most bytes WritePack writes for the files
// the index puts there: PackSlack and their TarBytes.
func (x *Index) packBytes() []int64 {
	bytes := make([]int64, len(x.Packs))
	for p := range bytes {
		bytes[p] = PackSlack
	}
	for i := range x.Entries {
		if e := &x.Entries[i]; e.Pack >= 0 && e.Pack < len(bytes) {
			bytes[e.Pack] += x.TarBytes(e)
		}
	}
	return bytes
}

// PackBounds gives, per pack, the most bytes of its tar stream a reader
// goes through to reach the files the index puts there: twice what they
// take (packBytes). A pack kept from an earlier entry also holds files no
// entry names any more (FORMAT.md), before and between the named ones, at
// most as many bytes of them as of the named ones (a save keeps such a
// pack only then: its live files end within this bound, by their
// offsets); what follows the last named file is not read. So a bomb never
// costs more than twice what the index states.
func (x *Index) PackBounds() []int64 {
	bounds := x.packBytes()
	for p := range bounds {
		bounds[p] *= 2
	}
	return bounds
}

// ReadPack reads the pack in r: it decompresses it and calls fn with its
// tar stream, which must not inflate past limit bytes (PackBounds: a pack
// that does is refused as soon as it does, so a bomb of a few KB never
// costs more than the index states). When fn succeeds, ReadPack reads r
// to its end without inflating what fn left (files no entry names any
// more, past the last one fn wanted: PackBounds does not count them), so
// that a digest verifier around r checks the whole pack; it returns the
// first error. When fn or
// the decompression fails, it also reads r to its end: a pack whose bytes
// are wrong mostly fails to parse before the digest check at its end, and
// the check's digest.ErrMismatch, wrapped with the parse error, says the
// pack is damaged rather than unreadable (a restore passes a damaged entry
// over; it fails on a store that cannot answer).
func ReadPack(r io.Reader, limit int64, fn func(*tar.Reader) error) error {
	dec, err := zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(64<<20),
		zstd.WithDecoderLowmem(false),
	)
	if err != nil {
		return err
	}
	lr := &boundReader{r: dec, left: limit, limit: limit}
	err = fn(tar.NewReader(lr))
	dec.Close()
	if err != nil {
		// Damage already named (a bomb refused at its bound, an unsafe or
		// corrupt entry) needs no proof, and a cancelled read none either.
		if errors.Is(err, digest.ErrMismatch) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsafe) ||
			errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if _, derr := io.Copy(io.Discard, r); errors.Is(derr, digest.ErrMismatch) {
			return fmt.Errorf("%w (reading it: %v)", derr, err)
		}
		return err
	}
	_, err = io.Copy(io.Discard, r)
	return err
}

// boundReader fails once more than limit bytes were read through it.
type boundReader struct {
	r           io.Reader
	left, limit int64
}

func (b *boundReader) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, b.err()
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, b.err()
	}
	return n, err
}

func (b *boundReader) err() error {
	return fmt.Errorf("%w: the pack inflates past the %d bytes its index accounts for", ErrCorrupt, b.limit)
}
