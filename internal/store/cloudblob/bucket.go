package cloudblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// Defaults for Config.
const (
	// DefaultPartSize is the size of an upload part (S3 multipart part,
	// Azure block, GCS chunk) and of a ranged download.
	DefaultPartSize = 8 << 20
	// DefaultConcurrency is how many parts of one object move at once.
	DefaultConcurrency = 4
)

// Config describes a Bucket.
type Config struct {
	// Bucket is the opened gocloud bucket. Required.
	Bucket *blob.Bucket
	// Name names the store in logs and errors, without credentials, such
	// as "s3://bucket/prefix". Required.
	Name string
	// Prefix is prepended to every object name: "" or a path ending in "/"
	// (see Prefix).
	Prefix string
	// Classify names backend-specific causes (access denied, missing
	// bucket); see MapError.
	Classify Classifier
	// MissingBucket is the error message of a NotFound from an upload or
	// a listing, which can only mean that the bucket does not exist (not
	// every service says so in the error), e.g. `bucket "x" does not exist`.
	MissingBucket string
	// Secrets are removed from every error message (see Scrub).
	Secrets []string
	// PartSize is the upload part size and the ranged-download chunk size.
	// Default DefaultPartSize.
	PartSize int
	// UploadPartSize, when set, overrides PartSize for uploads (GCS sends
	// chunks one after the other, so it wants bigger ones).
	UploadPartSize int
	// Concurrency is how many parts of one object are uploaded or
	// downloaded at once. Default DefaultConcurrency. Memory per transfer
	// is about Concurrency x PartSize.
	Concurrency int
	// BeforeWrite, when set, returns the WriterOptions.BeforeWrite hook of
	// an upload of size bytes (-1 when unknown), and, when not nil, what
	// to run after that upload failed (to clean up what the service may
	// still hold of it), given the SDK's error.
	BeforeWrite func(size int64) (before func(asFunc func(any) bool) error, failed func(error))
	// OnClose, when set, runs after Close closed Bucket (to close an SDK
	// client the gocloud bucket does not own).
	OnClose func() error
}

// Bucket is a store.Bucket over a gocloud.dev *blob.Bucket.
type Bucket struct {
	cfg Config
}

var _ store.Bucket = (*Bucket)(nil)

// New returns the Bucket that cfg describes.
func New(cfg Config) *Bucket {
	if cfg.PartSize <= 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.UploadPartSize <= 0 {
		cfg.UploadPartSize = cfg.PartSize
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	return &Bucket{cfg: cfg}
}

// Blob returns the gocloud bucket, for As (creating buckets in tests).
func (b *Bucket) Blob() *blob.Bucket { return b.cfg.Bucket }

// Close releases the gocloud bucket.
func (b *Bucket) Close() error {
	err := b.cfg.Bucket.Close()
	if b.cfg.OnClose != nil {
		if cerr := b.cfg.OnClose(); err == nil {
			err = cerr
		}
	}
	return err
}

// String implements store.Bucket.
func (b *Bucket) String() string { return b.cfg.Name }

// MapError maps err from this bucket's SDK (see the package function).
func (b *Bucket) MapError(err error) error { return MapError(err, b.cfg.Classify, b.cfg.Secrets) }

// key returns the object key of name, checked as store.Bucket requires.
func (b *Bucket) key(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || path.Clean(name) != name || strings.HasPrefix(name, "..") {
		return "", fmt.Errorf("invalid object name %q", name)
	}
	return b.cfg.Prefix + name, nil
}

// Stat implements store.Bucket.
func (b *Bucket) Stat(ctx context.Context, name string) (store.BlobInfo, error) {
	key, err := b.key(name)
	if err != nil {
		return store.BlobInfo{}, err
	}
	attrs, err := b.cfg.Bucket.Attributes(ctx, key)
	if err != nil {
		return store.BlobInfo{}, b.MapError(err)
	}
	return store.BlobInfo{Size: attrs.Size, Modified: attrs.ModTime}, nil
}

// Get implements store.Bucket. An object larger than twice the part size is
// read as parallel ranges (see rangedReader); smaller ones stream.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	key, err := b.key(name)
	if err != nil {
		return nil, err
	}
	r, err := b.cfg.Bucket.NewReader(ctx, key, nil)
	if err != nil {
		return nil, b.MapError(err)
	}
	if size := r.Size(); size > 2*int64(b.cfg.PartSize) && b.cfg.Concurrency > 1 {
		return newRangedReader(ctx, b, key, r, size), nil
	}
	return &reader{r: r, b: b}, nil
}

var _ store.RangeBucket = (*Bucket)(nil)

// GetRange implements store.RangeBucket with one ranged GET from off to the
// end of the object (a resumed read: the retry layer's, after a failure).
func (b *Bucket) GetRange(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	key, err := b.key(name)
	if err != nil {
		return nil, err
	}
	r, err := b.cfg.Bucket.NewRangeReader(ctx, key, off, -1, nil)
	if err != nil {
		return nil, b.MapError(err)
	}
	return &reader{r: r, b: b}, nil
}

// reader maps the errors of a streaming read.
type reader struct {
	r *blob.Reader
	b *Bucket
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = r.b.MapError(err)
	}
	return n, err
}

func (r *reader) Close() error { return r.r.Close() }

// Put implements store.Bucket. It uploads with blob.Bucket.Upload (parts in
// parallel where the service allows it). A read error or a cancelled ctx
// cancels the upload's context before gocloud closes the writer, so that
// nothing is committed: gocloud commits on a Close without error only.
// Upload is used rather than a Writer because gocloud v0.47.0's azureblob
// Writer.Close panics after a failed Write; any panic is recovered anyway.
func (b *Bucket) Put(ctx context.Context, name string, size int64, r io.Reader) (err error) {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src := &abortReader{r: r, ctx: ctx, cancel: cancel}
	defer func() {
		if p := recover(); p != nil {
			cancel()
			err = NewError(fmt.Sprintf("upload aborted: the storage SDK panicked: %v", p))
		}
	}()
	opts := &blob.WriterOptions{
		ContentType:    "application/octet-stream",
		BufferSize:     b.cfg.UploadPartSize,
		MaxConcurrency: b.cfg.Concurrency,
	}
	var failed func(error)
	if b.cfg.BeforeWrite != nil {
		opts.BeforeWrite, failed = b.cfg.BeforeWrite(size)
	}
	err = b.cfg.Bucket.Upload(ctx, key, src, opts)
	if err != nil && failed != nil {
		failed(err)
	}
	if src.err != nil {
		// The source failed (or lied about its digest or size): that is
		// the cause, whatever the SDK made of the cancelled upload.
		return src.err
	}
	return b.mapBucketError(err)
}

// mapBucketError maps the error of an upload or listing, where NotFound
// means a missing bucket, not a missing object.
func (b *Bucket) mapBucketError(err error) error {
	err = b.MapError(err)
	if errors.Is(err, store.ErrNotFound) && b.cfg.MissingBucket != "" {
		var inner *storeerr.Error
		if errors.As(err, &inner) && len(inner.Unwrap()) > 1 {
			return NewError(b.cfg.MissingBucket, inner.Unwrap()[1:]...)
		}
		return NewError(b.cfg.MissingBucket)
	}
	return err
}

// abortReader cancels the upload's context as soon as its source fails or
// ctx is done, so that the SDK cannot commit what it has read so far.
type abortReader struct {
	r      io.Reader
	ctx    context.Context
	cancel context.CancelFunc
	err    error
}

func (a *abortReader) Read(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	if err := a.ctx.Err(); err != nil {
		a.err = err
		a.cancel()
		return 0, err
	}
	n, err := a.r.Read(p)
	if err != nil && err != io.EOF {
		a.err = err
		a.cancel()
	}
	return n, err
}

// List implements store.Bucket.
func (b *Bucket) List(ctx context.Context, prefix string) ([]string, error) {
	objs, err := b.ListInfo(ctx, prefix)
	return store.Names(objs), err
}

// ListInfo implements store.InfoLister: the listing carries each object's
// size and modification time (S3 LastModified, GCS updated, Azure
// Last-Modified).
func (b *Bucket) ListInfo(ctx context.Context, prefix string) ([]store.ObjectInfo, error) {
	it := b.cfg.Bucket.List(&blob.ListOptions{Prefix: b.cfg.Prefix + prefix})
	var objs []store.ObjectInfo
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, b.mapBucketError(err)
		}
		if obj.IsDir {
			continue
		}
		objs = append(objs, store.ObjectInfo{Name: strings.TrimPrefix(obj.Key, b.cfg.Prefix), Size: obj.Size, Modified: obj.ModTime})
	}
}

// Delete implements store.Bucket.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	if err := b.cfg.Bucket.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return b.MapError(err)
	}
	return nil
}

// Prefix turns a store URL's path into an object name prefix: "" for no
// path, else the path without its leading '/' and ending in '/'. It rejects
// empty, "." and ".." segments.
func Prefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("invalid prefix path %q: empty, '.' or '..' segment", p)
		}
	}
	return p + "/", nil
}

// Name is the name of the store at scheme://host/path, without the query
// (which holds options, and sometimes secrets) and without credentials.
func Name(u *url.URL) string {
	n := url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/" + strings.Trim(u.Path, "/")}
	if n.Path == "/" {
		n.Path = ""
	}
	return store.Redact(n.String())
}

// Locate checks that u is a URL of scheme naming a bucket (what: "bucket",
// "container") and returns its name for messages (Name) and the prefix of
// the store's objects in it (Prefix). Its errors are store.BadURL.
func Locate(u *url.URL, scheme, what string) (name, prefix string, err error) {
	name = Name(u)
	if u.Scheme != scheme || u.Host == "" {
		return "", "", store.BadURL(fmt.Errorf("%s: no %s: write %s://%s/PREFIX", name, what, scheme, strings.ToUpper(what)))
	}
	prefix, err = Prefix(u.Path)
	if err != nil {
		return "", "", store.BadURL(fmt.Errorf("%s: %w", name, err))
	}
	return name, prefix, nil
}

// OpenStore opens the bucket of u with newBucket and lays a store out in
// it: the store.Opener of every cloud backend.
func OpenStore(ctx context.Context, u *url.URL, opts store.Options, newBucket func(context.Context, *url.URL, store.Options) (*Bucket, error)) (store.Store, error) {
	b, err := newBucket(ctx, u, opts)
	if err != nil {
		return nil, err
	}
	return store.NewObjectStore(b), nil
}
