package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"golang.org/x/sync/errgroup"
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
	// Stat returns the size of the object name and when it was written
	// (zero when the bucket cannot tell), or ErrNotFound.
	Stat(ctx context.Context, name string) (BlobInfo, error)
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

// InfoLister is implemented by buckets whose listing tells when each
// object was written at no extra cost (a directory entry's mtime, an object
// store's LastModified), so that a restore key reads refs newest first
// instead of all of them (see RefLister).
type InfoLister interface {
	// ListInfo is List with each object's size and modification time
	// (zero when the bucket cannot tell for that object), as the listing
	// gives them: no request per object.
	ListInfo(ctx context.Context, prefix string) ([]ObjectInfo, error)
}

// ObjectInfo is one object of an InfoLister's listing.
type ObjectInfo struct {
	Name     string
	Size     int64
	Modified time.Time
}

// Names returns the names of objs, for a List made of ListInfo.
func Names(objs []ObjectInfo) []string {
	names := make([]string, len(objs))
	for i, o := range objs {
		names[i] = o.Name
	}
	return names
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

// StageBlob stages a blob in st when it has a BlobStager (found with As
// through any wrapper); a store that cannot gives errors.ErrUnsupported.
func StageBlob(ctx context.Context, st Store) (StagedBlob, error) {
	bs, ok := As[BlobStager](st)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return bs.StageBlob(ctx)
}

// StagedBlob is a blob being written. It hashes what is written, so that
// the name it is committed under is checked, never taken on trust: a
// server that stages an upload refuses a client's false digest.
type StagedBlob interface {
	io.Writer
	// Digest is the digest of the bytes written so far.
	Digest() digest.Digest
	// Size is the number of bytes written so far.
	Size() int64
	// Commit names the bytes written as blob want. It fails with an error
	// wrapping digest.ErrMismatch, and leaves nothing readable, when they
	// are not size bytes hashing to want. After Commit (whatever its
	// result) the staged blob is done: Abort is a no-op.
	Commit(ctx context.Context, want digest.Digest, size int64) error
	// Abort drops the bytes written.
	Abort()
}

// CheckStaged returns nil when the bytes a StagedBlob hashed (got, n) are
// the blob want of size bytes, else an error wrapping digest.ErrMismatch
// that says how they differ. Every StagedBlob's Commit calls it before it
// makes the bytes readable.
func CheckStaged(got digest.Digest, n int64, want digest.Digest, size int64) error {
	switch {
	case n != size:
		return fmt.Errorf("%w: wrote %d bytes, want %d", digest.ErrMismatch, n, size)
	case got != want:
		return fmt.Errorf("%w: wrote bytes of %s, want %s", digest.ErrMismatch, got.Short(), want.Short())
	}
	return nil
}

// The layout of docs/FORMAT.md: each format version's objects live under
// their own prefix ("v1/"), so that a reader of one version never sees
// another's.
var (
	blobsDir = format.Prefix(format.Version) + "blobs/sha256/"
	refsDir  = format.Prefix(format.Version) + "refs/"
	metaDir  = format.Prefix(format.Version) + "meta/"
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
	_ BlobLister = (*ObjectStore)(nil)
	_ RefLister  = (*ObjectStore)(nil)
	_ MetaStore  = (*ObjectStore)(nil)
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
func (s *ObjectStore) StatBlob(ctx context.Context, d digest.Digest) (BlobInfo, error) {
	if err := d.Validate(); err != nil {
		return BlobInfo{}, err
	}
	info, err := s.b.Stat(ctx, BlobName(d))
	if err != nil {
		return BlobInfo{}, fmt.Errorf("%s: stat blob %s: %w", s.b, d.Short(), err)
	}
	return info, nil
}

// ListBlobs implements BlobLister: it lists the blobs directory and stats
// each blob (8 at a time). A blob deleted since the listing is left out;
// names that are not a blob's (a stray file) are skipped.
func (s *ObjectStore) ListBlobs(ctx context.Context) ([]BlobMeta, error) {
	// A bucket that lists sizes and times (every bucket of ours) answers in
	// its listing's requests; another is asked once per blob.
	if il, ok := s.b.(InfoLister); ok {
		objs, err := il.ListInfo(ctx, blobsDir)
		if err != nil {
			return nil, fmt.Errorf("%s: list blobs: %w", s.b, err)
		}
		var blobs []BlobMeta
		for _, o := range objs {
			if d, ok := blobDigest(o.Name); ok {
				blobs = append(blobs, BlobMeta{Digest: d, BlobInfo: BlobInfo{Size: o.Size, Modified: o.Modified}})
			}
		}
		return blobs, nil
	}
	names, err := s.b.List(ctx, blobsDir)
	if err != nil {
		return nil, fmt.Errorf("%s: list blobs: %w", s.b, err)
	}
	blobs := make([]BlobMeta, 0, len(names))
	for _, n := range names {
		if d, ok := blobDigest(n); ok {
			blobs = append(blobs, BlobMeta{Digest: d})
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	gone := make([]bool, len(blobs))
	for i := range blobs {
		g.Go(func() error {
			info, err := s.b.Stat(gctx, BlobName(blobs[i].Digest))
			switch {
			case errors.Is(err, ErrNotFound):
				gone[i] = true
			case err != nil:
				return fmt.Errorf("%s: list blobs: stat blob %s: %w", s.b, blobs[i].Digest.Short(), err)
			}
			blobs[i].BlobInfo = info
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	kept := blobs[:0]
	for i, b := range blobs {
		if !gone[i] {
			kept = append(kept, b)
		}
	}
	return kept, nil
}

// blobDigest is the digest of the blob object name, if it names one (not
// a temporary file, not a name of another shape).
func blobDigest(name string) (digest.Digest, bool) {
	d := digest.Digest(digest.Algorithm + ":" + strings.TrimPrefix(name, blobsDir))
	return d, d.Validate() == nil && BlobName(d) == name
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
	return &stagedBlob{s: s, staged: staged, dg: digest.NewDigester()}, nil
}

// stagedBlob is a Staged object of the bucket that hashes what is written.
type stagedBlob struct {
	s      *ObjectStore
	staged Staged
	dg     *digest.Digester
	done   bool // committed or aborted
}

func (b *stagedBlob) Write(p []byte) (int, error) {
	n, err := b.staged.Write(p)
	b.dg.Write(p[:n]) //nolint:errcheck // a hash never fails
	return n, err
}

func (b *stagedBlob) Digest() digest.Digest { return b.dg.Digest() }

func (b *stagedBlob) Size() int64 { return b.dg.Size() }

func (b *stagedBlob) Commit(ctx context.Context, want digest.Digest, size int64) error {
	err := want.Validate()
	if err == nil {
		err = CheckStaged(b.Digest(), b.Size(), want, size)
	}
	if err != nil {
		b.Abort()
		return fmt.Errorf("%s: put blob %s: %w", b.s.b, want.Short(), err)
	}
	b.done = true
	if err := b.staged.Commit(ctx, BlobName(want)); err != nil {
		return fmt.Errorf("%s: put blob %s: %w", b.s.b, want.Short(), err)
	}
	return nil
}

func (b *stagedBlob) Abort() {
	if !b.done {
		b.done = true
		b.staged.Abort()
	}
}

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

// DecodeRef parses and validates a JSON ref published under key. What
// fails to is a damaged ref (ErrDamagedRef).
func DecodeRef(key string, data []byte) (*Ref, error) {
	if len(data) > maxRefSize {
		return nil, DamagedRef(fmt.Errorf("ref %q is larger than %d bytes: not a tekton-cache ref", key, maxRefSize))
	}
	var r Ref
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&r); err != nil {
		return nil, DamagedRef(fmt.Errorf("decoding ref %q: %w", key, err))
	}
	if r.Key != key {
		return nil, DamagedRef(fmt.Errorf("ref %q holds key %q: the store is inconsistent", key, r.Key))
	}
	if err := r.Validate(); err != nil {
		return nil, DamagedRef(err)
	}
	return &r, nil
}

// DamagedRef marks err as ErrDamagedRef without changing its text.
func DamagedRef(err error) error { return damagedRef{err} }

type damagedRef struct{ err error }

func (d damagedRef) Error() string   { return d.err.Error() }
func (d damagedRef) Unwrap() []error { return []error{ErrDamagedRef, d.err} }

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
		if k, ok := refKey(n); ok {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// ListRefInfo implements RefLister: one listing of the refs directory,
// with each ref object's modification time when the bucket is an
// InfoLister (a ref object is written once per save, last), else zero.
func (s *ObjectStore) ListRefInfo(ctx context.Context, prefix string) ([]RefInfo, error) {
	il, ok := s.b.(InfoLister)
	if !ok {
		keys, err := s.ListRefs(ctx, prefix)
		return untimed(keys), err
	}
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	objs, err := il.ListInfo(ctx, refsDir+prefix)
	if err != nil {
		return nil, fmt.Errorf("%s: list refs %q: %w", s.b, prefix, err)
	}
	infos := make([]RefInfo, 0, len(objs))
	for _, o := range objs {
		if k, ok := refKey(o.Name); ok {
			infos = append(infos, RefInfo{Key: k, Modified: o.Modified})
		}
	}
	return infos, nil
}

// refKey returns the key of the ref object name, if it is one.
func refKey(name string) (string, bool) {
	k := strings.TrimPrefix(name, refsDir)
	return k, ValidateKey(k) == nil
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

// validMetaName is the shape of a record's name: lower-case letters,
// digits, '.', '_' and '-', not starting with a dot.
func validMetaName(name string) error {
	if name == "" || len(name) > 128 || name[0] == '.' {
		return fmt.Errorf("invalid record name %q", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid record name %q", name)
		}
	}
	return nil
}

// GetMeta implements MetaStore: the object v1/meta/NAME.
func (s *ObjectStore) GetMeta(ctx context.Context, name string) ([]byte, error) {
	if err := validMetaName(name); err != nil {
		return nil, err
	}
	rc, err := s.b.Get(ctx, metaDir+name)
	if err != nil {
		return nil, fmt.Errorf("%s: get record %q: %w", s.b, name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, MaxMetaSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: reading record %q: %w", s.b, name, err)
	}
	if len(data) > MaxMetaSize {
		return nil, fmt.Errorf("%s: record %q is larger than %d bytes", s.b, name, MaxMetaSize)
	}
	return data, nil
}

// PutMeta implements MetaStore.
func (s *ObjectStore) PutMeta(ctx context.Context, name string, data []byte) error {
	if err := validMetaName(name); err != nil {
		return err
	}
	if err := s.b.Put(ctx, metaDir+name, int64(len(data)), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("%s: put record %q: %w", s.b, name, err)
	}
	return nil
}
