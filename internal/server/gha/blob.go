package gha

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// spoolInMemory is how much of a request body is held in memory, when the
// store cannot stage a blob, before the rest goes to a temporary file
// (removed when the request ends: the part itself is in the store).
const spoolInMemory = 8 << 20

// storeStream stores the n bytes of r as a blob, hashed as they go, and
// returns it: straight into the store when it stages blobs; else, when
// reopen is given (the parts of an upload, in the store), by reading
// twice (hash, then put what hashes to it); else through a spool. Fewer
// or more than n bytes store nothing and fail with ErrInvalid.
func (s *Service) storeStream(ctx context.Context, n int64, r io.Reader, reopen func() (io.ReadCloser, error)) (format.Descriptor, error) {
	sb, err := store.StageBlob(ctx, s.st)
	if err == nil {
		got, err := io.Copy(sb, io.LimitReader(r, n+1))
		if err == nil && got != n {
			err = fmt.Errorf("%w: %d bytes sent, %d announced", ErrInvalid, got, n)
		}
		if err != nil {
			sb.Abort()
			return format.Descriptor{}, err
		}
		d := sb.Digest()
		return format.Descriptor{Digest: d, Size: n}, sb.Commit(ctx, d, n)
	}
	if !errors.Is(err, errors.ErrUnsupported) {
		return format.Descriptor{}, err
	}
	if reopen != nil {
		dg := digest.NewDigester()
		got, err := io.Copy(dg, io.LimitReader(r, n+1))
		if err == nil && got != n {
			err = fmt.Errorf("%w: %d bytes, %d announced", ErrInvalid, got, n)
		}
		if err != nil {
			return format.Descriptor{}, err
		}
		d := format.Descriptor{Digest: dg.Digest(), Size: n}
		if info, err := s.st.StatBlob(ctx, d.Digest); err == nil && info.Size == n {
			return d, nil // the same archive, saved before: stored once
		}
		rc, err := reopen()
		if err != nil {
			return format.Descriptor{}, err
		}
		defer rc.Close()
		return d, s.st.PutBlob(ctx, d.Digest, n, digest.NewVerifier(rc, d.Digest, n))
	}
	sp := &spool{}
	defer sp.close()
	dg := digest.NewDigester()
	got, err := io.Copy(io.MultiWriter(sp, dg), io.LimitReader(r, n+1))
	if err == nil && got != n {
		err = fmt.Errorf("%w: %d bytes sent, %d announced", ErrInvalid, got, n)
	}
	if err != nil {
		return format.Descriptor{}, err
	}
	d := format.Descriptor{Digest: dg.Digest(), Size: n}
	if info, err := s.st.StatBlob(ctx, d.Digest); err == nil && info.Size == n {
		return d, nil
	}
	rd, err := sp.reader()
	if err != nil {
		return format.Descriptor{}, err
	}
	return d, s.st.PutBlob(ctx, d.Digest, n, rd)
}

// assemble stores the data of parts, in order, as one blob of size bytes.
func (s *Service) assemble(ctx context.Context, parts []part, size int64) (format.Descriptor, error) {
	open := func() (io.ReadCloser, error) { return &partsReader{ctx: ctx, s: s, parts: parts}, nil }
	r, _ := open()
	defer r.Close()
	return s.storeStream(ctx, size, r, open)
}

// partsReader reads the data of parts one after the other, each part blob
// checked against its digest and stripped of its header.
type partsReader struct {
	ctx   context.Context
	s     *Service
	parts []part
	cur   io.ReadCloser
	v     io.Reader
}

func (p *partsReader) Read(b []byte) (int, error) {
	for {
		if p.v == nil {
			if len(p.parts) == 0 {
				return 0, io.EOF
			}
			pt := p.parts[0]
			p.parts = p.parts[1:]
			rc, err := p.s.st.GetBlob(p.ctx, pt.blob.Digest)
			if err != nil {
				return 0, fmt.Errorf("reading part %s: %w", pt.key, err)
			}
			v := digest.NewVerifier(rc, pt.blob.Digest, pt.blob.Size)
			if _, err := io.CopyN(io.Discard, v, pt.blob.Size-pt.n); err != nil {
				rc.Close()
				return 0, fmt.Errorf("reading part %s: %w", pt.key, err)
			}
			p.cur, p.v = rc, v
		}
		n, err := p.v.Read(b)
		if err == io.EOF {
			p.cur.Close()
			p.cur, p.v = nil, nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (p *partsReader) Close() error {
	if p.cur != nil {
		return p.cur.Close()
	}
	return nil
}

// spool holds what is written: in memory, then in a temporary file.
type spool struct {
	mem  bytes.Buffer
	file *os.File
}

func (s *spool) Write(b []byte) (int, error) {
	if s.file == nil && s.mem.Len()+len(b) <= spoolInMemory {
		return s.mem.Write(b)
	}
	if s.file == nil {
		f, err := os.CreateTemp("", "cache-serve-gha-*")
		if err != nil {
			return 0, err
		}
		os.Remove(f.Name()) // gone with the descriptor
		s.file = f
		if _, err := f.Write(s.mem.Bytes()); err != nil {
			return 0, err
		}
		s.mem = bytes.Buffer{}
	}
	return s.file.Write(b)
}

func (s *spool) reader() (io.Reader, error) {
	if s.file == nil {
		return bytes.NewReader(s.mem.Bytes()), nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return s.file, nil
}

func (s *spool) close() {
	if s.file != nil {
		s.file.Close()
	}
}
