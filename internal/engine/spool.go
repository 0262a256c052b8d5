package engine

import (
	"bytes"
	"io"
	"os"

	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// spool holds a pack between compression and upload: in memory up to
// memLimit bytes, then in a temporary file, so that a pack of one huge file
// does not hold the whole file in memory. It hashes what it holds.
type spool struct {
	memLimit int
	buf      bytes.Buffer
	f        *os.File
	n        int64
	d        *digest.Digester
}

func newSpool(memLimit int) *spool { return &spool{memLimit: memLimit, d: digest.NewDigester()} }

func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && s.buf.Len()+len(p) > s.memLimit {
		f, err := os.CreateTemp("", "tekton-cache-pack-*")
		if err != nil {
			return 0, err
		}
		os.Remove(f.Name()) // unlinked: it goes away with the descriptor
		if _, err := f.Write(s.buf.Bytes()); err != nil {
			f.Close()
			return 0, err
		}
		s.buf = bytes.Buffer{}
		s.f = f
	}
	var n int
	var err error
	if s.f != nil {
		n, err = s.f.Write(p)
	} else {
		n, err = s.buf.Write(p)
	}
	s.n += int64(n)
	s.d.Write(p[:n])
	return n, err
}

// Digest returns the digest of the bytes written so far.
func (s *spool) Digest() digest.Digest { return s.d.Digest() }

// Size returns the number of bytes written so far.
func (s *spool) Size() int64 { return s.n }

// Reader returns the spooled bytes from the start.
func (s *spool) Reader() io.Reader {
	if s.f != nil {
		return io.NewSectionReader(s.f, 0, s.n)
	}
	return bytes.NewReader(s.buf.Bytes())
}

// Close frees the spool.
func (s *spool) Close() {
	if s.f != nil {
		s.f.Close()
	}
	s.buf = bytes.Buffer{}
}
