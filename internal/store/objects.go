package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
)

// Bucket is the byte-level interface of an object store (a directory, memory,
// S3, GCS, Azure Blob). NewObjectStore turns one into a Store with the layout
// of docs/FORMAT.md:
//
//	v1/blobs/sha256/<hex>   immutable blobs
//	v1/refs/<key>           refs, as JSON
//
// Names are '/'-separated and never start with '/' or contain "..".
type Bucket interface {
	// Get opens the object name. A missing object gives ErrNotFound.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Stat returns the size of the object name, or ErrNotFound.
	Stat(ctx context.Context, name string) (int64, error)
	// Put writes r as the object name, all-or-nothing: the object becomes
	// visible (replacing any older one) only when r reached io.EOF without
	// error; a failed or cancelled Put leaves the old object or none.
	// size is a hint (-1 when unknown).
	Put(ctx context.Context, name string, size int64, r io.Reader) error
	// List returns the names of the objects that start with prefix.
	List(ctx context.Context, prefix string) ([]string, error)
	// Delete removes the object name; a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// String names the bucket for logs, without credentials.
	String() string
}

// Stager is implemented by buckets that can take an object before its name
// is known, without holding it in memory: a directory writes a temporary
// file and renames it at Commit.
type Stager interface {
	Stage(ctx context.Context) (Staged, error)
}

// Staged is an object being written by a Stager.
type Staged interface {
	io.Writer
	// Commit makes what was written the object name, all-or-nothing.
	Commit(ctx context.Context, name string) error
	// Abort drops what was written.
	Abort()
}

// Syncer is implemented by buckets whose Stager commits are durable only
// after Sync: the store calls it before it publishes a ref, so a ref never
// outlives the blobs it names.
type Syncer interface {
	Sync(ctx context.Context) error
}

// BlobStager is implemented by stores that take a blob whose digest is known
// only once it is written (packs are hashed while they are compressed).
// StageBlob fails with errors.ErrUnsupported when the store cannot.
type BlobStager interface {
	StageBlob(ctx context.Context) (StagedBlob, error)
}

// StagedBlob is a blob being written.
type StagedBlob interface {
	io.Writer
	// Commit names the bytes written as blob d, checking their count against
	// size; the caller computed d from the same bytes.
	Commit(ctx context.Context, d digest.Digest, size int64) error
	// Abort drops the bytes written.
	Abort()
}

// The layout of docs/FORMAT.md: each format version's objects live under
// their own prefix ("v1/"), so that a reader of one version never sees
// another's.
var (
	blobsDir = format.Prefix(format.Version) + "blobs/sha256/"
	refsDir  = format.Prefix(format.Version) + "refs/"
)

// maxRefSize bounds what GetRef reads: a ref is a few hundred bytes per pack.
const maxRefSize = 16 << 20

// ObjectStore is a Store laid out in a Bucket.
type ObjectStore struct{ b Bucket }

var (
	_ Store      = (*ObjectStore)(nil)
	_ Deleter    = (*ObjectStore)(nil)
	_ BlobStager = (*ObjectStore)(nil)
	_ BlobRanger = (*ObjectStore)(nil)
)

// NewObjectStore returns the Store laid out in b.
func NewObjectStore(b Bucket) *ObjectStore { return &ObjectStore{b: b} }

// Bucket returns the underlying bucket.
func (s *ObjectStore) Bucket() Bucket { return s.b }

// BlobName returns the object name of blob d.
func BlobName(d digest.Digest) string { return blobsDir + d.Hex() }

// RefName returns the object name of the ref of key.
func RefName(key string) string { return refsDir + key }

// String implements Store.
func (s *ObjectStore) String() string { return s.b.String() }

// StatBlob implements Store.
func (s *ObjectStore) StatBlob(ctx context.Context, d digest.Digest) (int64, error) {
	if err := d.Validate(); err != nil {
		return 0, err
	}
	n, err := s.b.Stat(ctx, BlobName(d))
	if err != nil {
		return 0, fmt.Errorf("%s: stat blob %s: %w", s.b, d.Short(), err)
	}
	return n, nil
}

// GetBlob implements Store.
func (s *ObjectStore) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	rc, err := s.b.Get(ctx, BlobName(d))
	if err != nil {
		return nil, fmt.Errorf("%s: get blob %s: %w", s.b, d.Short(), err)
	}
	return rc, nil
}

// GetBlobRange implements BlobRanger when the bucket is a RangeBucket; else
// it reads the blob from the start and skips off bytes.
func (s *ObjectStore) GetBlobRange(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	rb, ok := s.b.(RangeBucket)
	if !ok {
		rc, err := s.GetBlob(ctx, d)
		if err != nil {
			return nil, err
		}
		if _, err := io.CopyN(io.Discard, rc, off); err != nil {
			rc.Close()
			return nil, fmt.Errorf("%s: get blob %s from byte %d: %w", s.b, d.Short(), off, err)
		}
		return rc, nil
	}
	rc, err := rb.GetRange(ctx, BlobName(d), off)
	if err != nil {
		return nil, fmt.Errorf("%s: get blob %s from byte %d: %w", s.b, d.Short(), off, err)
	}
	return rc, nil
}

// PutBlob implements Store. The bytes are verified while they stream, so a
// mismatch fails the Put before the object becomes visible.
func (s *ObjectStore) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if err := s.b.Put(ctx, BlobName(d), size, digest.NewVerifier(r, d, size)); err != nil {
		return fmt.Errorf("%s: put blob %s: %w", s.b, d.Short(), err)
	}
	return nil
}

// StageBlob implements BlobStager when the bucket is a Stager.
func (s *ObjectStore) StageBlob(ctx context.Context) (StagedBlob, error) {
	st, ok := s.b.(Stager)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	staged, err := st.Stage(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: staging a blob: %w", s.b, err)
	}
	return &stagedBlob{s: s, staged: staged}, nil
}

type stagedBlob struct {
	s      *ObjectStore
	staged Staged
	n      int64
}

func (b *stagedBlob) Write(p []byte) (int, error) {
	n, err := b.staged.Write(p)
	b.n += int64(n)
	return n, err
}

func (b *stagedBlob) Commit(ctx context.Context, d digest.Digest, size int64) error {
	if err := d.Validate(); err != nil {
		b.staged.Abort()
		return err
	}
	if b.n != size {
		b.staged.Abort()
		return fmt.Errorf("%s: put blob %s: %w: wrote %d bytes, want %d", b.s.b, d.Short(), digest.ErrMismatch, b.n, size)
	}
	if err := b.staged.Commit(ctx, BlobName(d)); err != nil {
		return fmt.Errorf("%s: put blob %s: %w", b.s.b, d.Short(), err)
	}
	return nil
}

func (b *stagedBlob) Abort() { b.staged.Abort() }

// GetRef implements Store.
func (s *ObjectStore) GetRef(ctx context.Context, key string) (*Ref, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	rc, err := s.b.Get(ctx, RefName(key))
	if err != nil {
		return nil, fmt.Errorf("%s: get ref %q: %w", s.b, key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxRefSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: reading ref %q: %w", s.b, key, err)
	}
	return DecodeRef(key, data)
}

// DecodeRef parses and validates a JSON ref published under key.
func DecodeRef(key string, data []byte) (*Ref, error) {
	if len(data) > maxRefSize {
		return nil, fmt.Errorf("ref %q is larger than %d bytes: not a tekton-cache ref", key, maxRefSize)
	}
	var r Ref
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("decoding ref %q: %w", key, err)
	}
	if r.Key != key {
		return nil, fmt.Errorf("ref %q holds key %q: the store is inconsistent", key, r.Key)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// PutRef implements Store.
func (s *ObjectStore) PutRef(ctx context.Context, ref *Ref) error {
	if err := ref.Validate(); err != nil {
		return err
	}
	if sy, ok := s.b.(Syncer); ok {
		if err := sy.Sync(ctx); err != nil {
			return fmt.Errorf("%s: put ref %q: syncing its blobs: %w", s.b, ref.Key, err)
		}
	}
	data, err := json.Marshal(ref)
	if err != nil {
		return err
	}
	if err := s.b.Put(ctx, RefName(ref.Key), int64(len(data)), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("%s: put ref %q: %w", s.b, ref.Key, err)
	}
	return nil
}

// ListRefs implements Store.
func (s *ObjectStore) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	names, err := s.b.List(ctx, refsDir+prefix)
	if err != nil {
		return nil, fmt.Errorf("%s: list refs %q: %w", s.b, prefix, err)
	}
	keys := make([]string, 0, len(names))
	for _, n := range names {
		k := strings.TrimPrefix(n, refsDir)
		if ValidateKey(k) == nil {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// DeleteRef implements Deleter.
func (s *ObjectStore) DeleteRef(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := s.b.Delete(ctx, RefName(key)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s: delete ref %q: %w", s.b, key, err)
	}
	return nil
}

// DeleteBlob implements Deleter.
func (s *ObjectStore) DeleteBlob(ctx context.Context, d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if err := s.b.Delete(ctx, BlobName(d)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s: delete blob %s: %w", s.b, d.Short(), err)
	}
	return nil
}
