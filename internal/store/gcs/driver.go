package gcsstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gocloud.dev/blob/driver"
	"gocloud.dev/gcerrors"
	"google.golang.org/api/googleapi"
	storagev1 "google.golang.org/api/storage/v1"
)

// bucket is a gocloud driver.Bucket over the GCS JSON API's generated
// client (google.golang.org/api/storage/v1), so that the store's objects go
// through cloudblob like S3's and Azure's. It replaces gocloud's gcsblob,
// which is built on cloud.google.com/go/storage: that client links gRPC's
// xDS, Envoy's protobufs and OpenTelemetry's exporters and GCP detectors,
// whose package initialisation alone took 5-7 ms of every run of the
// binary, whatever the store (docs/BENCHMARKS.md).
type bucket struct {
	svc  *storagev1.Service
	name string
}

var _ driver.Bucket = (*bucket)(nil)

// errUnimplemented is what the operations this store never uses return.
var errUnimplemented = errors.New("not implemented by the gs:// store")

// never is the retry policy of an upload's requests: one attempt each. The
// retries are the store layer's (store.WithRetries).
func never(error) bool { return false }

func (b *bucket) ErrorCode(err error) gcerrors.ErrorCode {
	var ge *googleapi.Error
	switch {
	case errors.Is(err, errUnimplemented):
		return gcerrors.Unimplemented
	case errors.Is(err, context.Canceled):
		return gcerrors.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return gcerrors.DeadlineExceeded
	case !errors.As(err, &ge):
		return gcerrors.Unknown
	}
	switch ge.Code {
	case http.StatusNotFound:
		return gcerrors.NotFound
	case http.StatusPreconditionFailed:
		return gcerrors.FailedPrecondition
	case http.StatusUnauthorized, http.StatusForbidden:
		return gcerrors.PermissionDenied
	case http.StatusTooManyRequests:
		return gcerrors.ResourceExhausted
	case http.StatusBadRequest:
		return gcerrors.InvalidArgument
	case http.StatusNotImplemented:
		return gcerrors.Unimplemented
	}
	return gcerrors.Unknown
}

// As exposes the *storagev1.Service.
func (b *bucket) As(i any) bool { return exposes(b.svc)(i) }

// exposes is the asFunc of gocloud's hooks and As: it sets a *T to v.
func exposes[T any](v T) func(any) bool {
	return func(i any) bool {
		p, ok := i.(*T)
		if ok {
			*p = v
		}
		return ok
	}
}

// ErrorAs exposes *googleapi.Error.
func (b *bucket) ErrorAs(err error, i any) bool { return errors.As(err, i) }

func (b *bucket) Attributes(ctx context.Context, key string) (*driver.Attributes, error) {
	o, err := b.svc.Objects.Get(b.name, key).Fields("size", "updated", "timeCreated", "contentType", "etag").Context(ctx).Do()
	if err != nil {
		return nil, err
	}
	return &driver.Attributes{
		ContentType: o.ContentType,
		Size:        int64(o.Size),
		ModTime:     parseTime(o.Updated),
		CreateTime:  parseTime(o.TimeCreated),
		ETag:        o.Etag,
	}, nil
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func (b *bucket) ListPaged(ctx context.Context, opts *driver.ListOptions) (*driver.ListPage, error) {
	call := b.svc.Objects.List(b.name).Prefix(opts.Prefix).Fields("nextPageToken", "prefixes", "items(name,size,updated)").Context(ctx)
	if opts.Delimiter != "" {
		call = call.Delimiter(opts.Delimiter)
	}
	if opts.PageSize > 0 {
		call = call.MaxResults(int64(opts.PageSize))
	}
	if len(opts.PageToken) > 0 {
		call = call.PageToken(string(opts.PageToken))
	}
	if opts.BeforeList != nil {
		if err := opts.BeforeList(exposes(call)); err != nil {
			return nil, err
		}
	}
	res, err := call.Do()
	if err != nil {
		return nil, err
	}
	page := &driver.ListPage{NextPageToken: []byte(res.NextPageToken)}
	for _, o := range res.Items {
		page.Objects = append(page.Objects, &driver.ListObject{Key: o.Name, Size: int64(o.Size), ModTime: parseTime(o.Updated)})
	}
	for _, p := range res.Prefixes {
		page.Objects = append(page.Objects, &driver.ListObject{Key: p, IsDir: true})
	}
	return page, nil
}

// NewRangeReader reads length bytes from offset (to the end for a negative
// length) with one media GET.
func (b *bucket) NewRangeReader(ctx context.Context, key string, offset, length int64, opts *driver.ReaderOptions) (driver.Reader, error) {
	if length == 0 {
		// Only the object's attributes.
		a, err := b.Attributes(ctx, key)
		if err != nil {
			return nil, err
		}
		return &reader{body: http.NoBody, attrs: driver.ReaderAttributes{ContentType: a.ContentType, ModTime: a.ModTime, Size: a.Size}}, nil
	}
	call := b.svc.Objects.Get(b.name, key).Context(ctx)
	switch {
	case length > 0:
		call.Header().Set("Range", fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		call.Header().Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	if opts != nil && opts.BeforeRead != nil {
		if err := opts.BeforeRead(exposes(call)); err != nil {
			return nil, err
		}
	}
	res, err := call.Download()
	if err != nil {
		var ge *googleapi.Error
		if errors.As(err, &ge) && ge.Code == http.StatusRequestedRangeNotSatisfiable {
			// A range from the end of the object: nothing to read.
			return &reader{body: http.NoBody, attrs: driver.ReaderAttributes{Size: offset}}, nil
		}
		return nil, err
	}
	r := &reader{body: res.Body, attrs: driver.ReaderAttributes{
		ContentType: res.Header.Get("Content-Type"),
		Size:        res.ContentLength,
	}}
	if t, err := http.ParseTime(res.Header.Get("Last-Modified")); err == nil {
		r.attrs.ModTime = t
	}
	if res.StatusCode == http.StatusPartialContent {
		// Content-Range: bytes FIRST-LAST/TOTAL: the part must start where
		// it was asked to, and the object's size is TOTAL.
		first, total, ok := contentRange(res.Header.Get("Content-Range"))
		if !ok || first != offset {
			res.Body.Close()
			return nil, fmt.Errorf("a ranged read of %s from byte %d answered Content-Range %q", key, offset, res.Header.Get("Content-Range"))
		}
		r.attrs.Size = total
	} else if offset > 0 || length > 0 {
		res.Body.Close()
		return nil, fmt.Errorf("a ranged read of %s answered %s, not 206 Partial Content", key, res.Status)
	}
	return r, nil
}

// contentRange parses "bytes FIRST-LAST/TOTAL".
func contentRange(v string) (first, total int64, ok bool) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, false
	}
	span, tot, ok := strings.Cut(rest, "/")
	a, _, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	return first, total, err1 == nil && err2 == nil && first >= 0 && total > first
}

type reader struct {
	body  io.ReadCloser
	attrs driver.ReaderAttributes
}

func (r *reader) Read(p []byte) (int, error)           { return r.body.Read(p) }
func (r *reader) Close() error                         { return r.body.Close() }
func (r *reader) Attributes() *driver.ReaderAttributes { return &r.attrs }
func (r *reader) As(any) bool                          { return false }
func (b *bucket) Copy(context.Context, string, string, *driver.CopyOptions) error {
	return errUnimplemented
}

func (b *bucket) SignedURL(context.Context, string, *driver.SignedURLOptions) (string, error) {
	return "", errUnimplemented
}

func (b *bucket) Delete(ctx context.Context, key string, opts *driver.DeleteOptions) error {
	call := b.svc.Objects.Delete(b.name, key).Context(ctx)
	if opts != nil && opts.BeforeDelete != nil {
		if err := opts.BeforeDelete(exposes(call)); err != nil {
			return err
		}
	}
	return call.Do()
}

func (b *bucket) Close() error { return nil }

// NewTypedWriter returns a writer whose object is created by one insert:
// a multipart upload when it fits in one chunk of opts.BufferSize, else a
// resumable upload in chunks of that size, finalized only by the last one,
// after the source's end. A source that fails or a cancelled ctx leaves no
// object.
func (b *bucket) NewTypedWriter(ctx context.Context, key, contentType string, opts *driver.WriterOptions) (driver.Writer, error) {
	chunk := opts.BufferSize
	if chunk <= 0 {
		chunk = uploadChunkSize
	}
	obj := &storagev1.Object{
		Name:               key,
		ContentType:        contentType,
		CacheControl:       opts.CacheControl,
		ContentDisposition: opts.ContentDisposition,
		ContentEncoding:    opts.ContentEncoding,
		ContentLanguage:    opts.ContentLanguage,
		Metadata:           opts.Metadata,
	}
	w := &writer{ctx: ctx, done: make(chan error, 1)}
	w.upload = func(r io.Reader) error {
		call := b.svc.Objects.Insert(b.name, obj).Name(key).
			Media(r, googleapi.ContentType(contentType), googleapi.ChunkSize(chunk)).
			WithRetry(nil, never).
			Fields("name").
			Context(ctx)
		if opts.IfNotExist {
			call = call.IfGenerationMatch(0)
		}
		if opts.BeforeWrite != nil {
			if err := opts.BeforeWrite(exposes(call)); err != nil {
				return err
			}
		}
		_, err := call.Do()
		return err
	}
	return w, nil
}

// writer sends what is written through a pipe to one upload, or, through
// Upload, reads the source itself.
type writer struct {
	ctx    context.Context
	upload func(io.Reader) error
	pw     *io.PipeWriter
	done   chan error
	// uploaded: Upload ran, with result err.
	uploaded bool
	err      error
}

// Upload implements driver.Uploader: the whole object from r. Its error is
// Close's, which gocloud wraps with the driver's ErrorCode (it hands
// Upload's back as it is).
func (w *writer) Upload(r io.Reader) error {
	if w.pw != nil || w.uploaded {
		return errors.New("gs:// upload: Upload after Write")
	}
	w.uploaded = true
	w.err = w.upload(r)
	return nil
}

func (w *writer) Write(p []byte) (int, error) {
	if w.uploaded {
		return 0, errors.New("gs:// upload: Write after Upload")
	}
	if w.pw == nil {
		pr, pw := io.Pipe()
		w.pw = pw
		go func() {
			err := w.upload(pr)
			pr.CloseWithError(err)
			w.done <- err
		}()
	}
	return w.pw.Write(p)
}

func (w *writer) Close() error {
	switch {
	case w.uploaded:
		return w.err
	case w.pw == nil:
		// Nothing written: an empty object, unless ctx was cancelled.
		if err := w.ctx.Err(); err != nil {
			return err
		}
		return w.upload(strings.NewReader(""))
	}
	if err := w.ctx.Err(); err != nil {
		w.pw.CloseWithError(err)
	} else {
		w.pw.Close()
	}
	return <-w.done
}
