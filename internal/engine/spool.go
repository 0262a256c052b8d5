package engine

import (
	"bytes"
	"io"
	"os"
)

// spool holds a pack between compression and upload: in memory up to
// memLimit bytes, then in a temporary file, so that a pack of one huge file
// does not hold the whole file in memory.
type spool struct {
	memLimit int
	buf      bytes.Buffer
	f        *os.File
	n        int64
}

func newSpool(memLimit int) *spool { return &spool{memLimit: memLimit} }

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
	s.n += int64(len(p))
	if s.f != nil {
		return s.f.Write(p)
	}
	return s.buf.Write(p)
}

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
