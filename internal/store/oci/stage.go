package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

var _ store.BlobStager = (*Store)(nil)

// StageBlob implements store.BlobStager: the blob goes to the registry
// while it is written, as a chunked upload whose digest is given at the end.
// The staged blob hashes what it sends, and Commit aborts the upload, before
// the registry is asked to name it, when the bytes are not the blob given
// (the registry checks the digest too). A pack is never held in memory or
// in a temporary file on its way to the registry.
func (s *Store) StageBlob(ctx context.Context) (store.StagedBlob, error) {
	pr, pw := io.Pipe()
	l := &streamLayer{body: pr}
	b := &stagedBlob{s: s, pw: pw, l: l, dg: digest.NewDigester(), done: make(chan error, 1)}
	go func() {
		err := s.pusher.Load().Upload(ctx, s.repo, l)
		// Unblock a writer whose upload ended early (refused, cancelled).
		pr.CloseWithError(fmt.Errorf("upload ended: %w", errOr(err, io.ErrClosedPipe)))
		b.done <- err
	}()
	return b, nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

var errAborted = errors.New("upload aborted")

// errNoRewind stops go-containerregistry from retrying an upload whose
// bytes were already read: they stream once.
var errNoRewind = errors.New("the blob's reader cannot be read twice, so the upload is not retried")

type stagedBlob struct {
	s    *Store
	pw   *io.PipeWriter
	l    *streamLayer
	dg   *digest.Digester // what was sent
	done chan error
	once sync.Once // ends the upload: Commit or Abort, once
	err  error     // how the upload ended
}

// end closes the upload's body, with cause when it is not nil (the upload
// then fails), and waits for the upload to end. Only its first call acts.
func (b *stagedBlob) end(cause error) error {
	b.once.Do(func() {
		b.pw.CloseWithError(cause)
		b.err = <-b.done
	})
	return b.err
}

func (b *stagedBlob) Write(p []byte) (int, error) {
	n, err := b.pw.Write(p)
	b.dg.Write(p[:n]) //nolint:errcheck // a hash never fails
	return n, err
}

// Digest implements store.StagedBlob.
func (b *stagedBlob) Digest() digest.Digest { return b.dg.Digest() }

// Size implements store.StagedBlob.
func (b *stagedBlob) Size() int64 { return b.dg.Size() }

// Commit implements store.StagedBlob.
func (b *stagedBlob) Commit(_ context.Context, d digest.Digest, size int64) error {
	h, err := v1.NewHash(d.String())
	if err == nil {
		err = store.CheckStaged(b.Digest(), b.Size(), d, size)
	}
	if err != nil {
		b.Abort()
		return err
	}
	b.l.size.Store(size)
	b.l.hash.Store(&h)
	if err := b.end(nil); err != nil {
		return b.s.fail("put blob "+d.Short(), err)
	}
	return nil
}

// Abort implements store.StagedBlob: the upload fails and the registry
// drops what it received. After Commit it does nothing.
func (b *stagedBlob) Abort() {
	b.end(errAborted) //nolint:errcheck // the upload is dropped
}

// streamLayer is the v1.Layer handed to go-containerregistry: a blob's
// bytes, readable once. PutBlob sets its digest up front (a HEAD first, then
// one upload); StageBlob sets it only once the bytes were written, so it is
// uploaded in chunks and committed with the digest the writer gave.
type streamLayer struct {
	body io.ReadCloser
	hash atomic.Pointer[v1.Hash]
	size atomic.Int64
	used atomic.Bool
}

var _ v1.Layer = (*streamLayer)(nil)

// Digest implements v1.Layer.
func (l *streamLayer) Digest() (v1.Hash, error) {
	if h := l.hash.Load(); h != nil {
		return *h, nil
	}
	return v1.Hash{}, stream.ErrNotComputed
}

// Size implements v1.Layer.
func (l *streamLayer) Size() (int64, error) {
	if l.hash.Load() == nil {
		return 0, stream.ErrNotComputed
	}
	return l.size.Load(), nil
}

// DiffID implements v1.Layer; uploads do not use it.
func (l *streamLayer) DiffID() (v1.Hash, error) {
	return v1.Hash{}, errors.New("no diff ID: a blob, not a layer")
}

// Uncompressed implements v1.Layer; uploads do not use it.
func (l *streamLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("a blob has no uncompressed form")
}

// MediaType implements v1.Layer.
func (l *streamLayer) MediaType() (types.MediaType, error) {
	return types.MediaType("application/octet-stream"), nil
}

// Compressed implements v1.Layer: the bytes, once.
func (l *streamLayer) Compressed() (io.ReadCloser, error) {
	if l.used.Swap(true) {
		return nil, errNoRewind
	}
	return l.body, nil
}
