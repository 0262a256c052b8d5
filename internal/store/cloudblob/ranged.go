package cloudblob

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"gocloud.dev/blob"
)

// rangedReader reads a large object as parallel ranged GETs of PartSize
// bytes, delivered in order. The first part comes from the GET that found
// the object (so a small object costs one request); parts 1..n-1 are fetched
// by up to Concurrency goroutines, each into one of Concurrency buffers, so
// memory stays at Concurrency x PartSize however large the object is. A
// buffer is reused once the reader has consumed it, which keeps the fetches
// at most Concurrency parts ahead of the reader.
type rangedReader struct {
	b     *Bucket
	key   string
	size  int64
	chunk int64
	parts int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	free   chan []byte // buffers not in use; a receive is a fetch slot
	fut    []*part

	first   io.ReadCloser // part 0, streamed; nil once done
	cur     *bytes.Reader // the part being read, after part 0
	curBuf  []byte        // its buffer, to return to free
	next    int           // index of the next part to read
	read    int64         // bytes delivered so far
	err     error
	closeMu sync.Once
}

type part struct {
	done chan struct{}
	buf  []byte
	err  error
}

func newRangedReader(ctx context.Context, b *Bucket, key string, first *blob.Reader, size int64) *rangedReader {
	ctx, cancel := context.WithCancel(ctx)
	chunk := int64(b.cfg.PartSize)
	parts := int((size + chunk - 1) / chunk)
	r := &rangedReader{
		b: b, key: key, size: size, chunk: chunk, parts: parts,
		ctx: ctx, cancel: cancel,
		free:  make(chan []byte, b.cfg.Concurrency),
		fut:   make([]*part, parts),
		first: first,
		next:  1,
	}
	for range b.cfg.Concurrency {
		r.free <- nil // allocated on first use
	}
	for i := 1; i < parts; i++ {
		r.fut[i] = &part{done: make(chan struct{})}
	}
	r.wg.Add(1)
	go r.dispatch()
	return r
}

// dispatch starts the fetch of each part in order, as buffers come free.
func (r *rangedReader) dispatch() {
	defer r.wg.Done()
	for i := 1; i < r.parts; i++ {
		var buf []byte
		select {
		case buf = <-r.free:
		case <-r.ctx.Done():
			return
		}
		r.wg.Add(1)
		go r.fetch(i, buf)
	}
}

func (r *rangedReader) fetch(i int, buf []byte) {
	defer r.wg.Done()
	p := r.fut[i]
	defer close(p.done)
	off := int64(i) * r.chunk
	n := min(r.chunk, r.size-off)
	if int64(cap(buf)) < n {
		buf = make([]byte, r.chunk)
	}
	buf = buf[:n]
	// A failed part fails the read; the store's retry layer resumes it
	// from the byte the reader reached (store.WithRetries).
	rr, err := r.b.cfg.Bucket.NewRangeReader(r.ctx, r.key, off, n, nil)
	if err == nil {
		_, err = io.ReadFull(rr, buf)
		rr.Close()
	}
	if err != nil {
		err = fmt.Errorf("reading bytes %d-%d: %w", off, off+n-1, r.b.MapError(err))
	}
	p.buf, p.err = buf, err
}

// Read implements io.Reader.
func (r *rangedReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, r.err
	}
	for r.err == nil {
		if r.first != nil {
			want := r.chunk - r.read
			if int64(len(p)) > want {
				p = p[:want]
			}
			n, err := r.first.Read(p)
			r.read += int64(n)
			switch {
			case r.read == r.chunk:
				r.first.Close()
				r.first = nil
			case err == io.EOF:
				r.err = fmt.Errorf("object ended after %d of %d bytes: %w", r.read, r.size, io.ErrUnexpectedEOF)
			case err != nil:
				r.err = r.b.MapError(err)
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		if r.cur != nil {
			n, _ := r.cur.Read(p)
			r.read += int64(n)
			if r.cur.Len() == 0 {
				r.free <- r.curBuf // cannot block: this buffer came from free
				r.cur, r.curBuf = nil, nil
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		if r.next >= r.parts {
			return 0, io.EOF
		}
		f := r.fut[r.next]
		select {
		case <-f.done:
		case <-r.ctx.Done():
			r.err = r.b.MapError(r.ctx.Err())
			return 0, r.err
		}
		if f.err != nil {
			r.err = f.err
			break
		}
		r.next++
		r.cur, r.curBuf = bytes.NewReader(f.buf), f.buf
		f.buf = nil
	}
	return 0, r.err
}

// Close implements io.Closer. It stops the fetches and waits for them.
func (r *rangedReader) Close() error {
	r.closeMu.Do(func() {
		r.cancel()
		if r.first != nil {
			r.first.Close()
			r.first = nil
		}
		r.wg.Wait()
		if r.err == nil {
			r.err = fmt.Errorf("read after close")
		}
	})
	return nil
}
