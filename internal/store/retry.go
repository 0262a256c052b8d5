package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// Defaults of the retry policy (see Options).
const (
	// DefaultRetries is how many times a failed operation is tried again:
	// 5 attempts in all.
	DefaultRetries = 4
	// DefaultRetryDelay is the first backoff; each next one doubles, with
	// jitter (a delay of d is drawn from [d/2, d]).
	DefaultRetryDelay = 500 * time.Millisecond
	// DefaultMaxRetryWait caps one backoff, and the Retry-After the store
	// may ask for: a longer Retry-After ends the retries at once.
	DefaultMaxRetryWait = 30 * time.Second
)

// BlobRanger is implemented by stores that can read a blob from an offset,
// so that a read cut off halfway resumes where it stopped.
type BlobRanger interface {
	// GetBlobRange opens blob d for reading from byte off to its end.
	GetBlobRange(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error)
}

// RangeBucket is implemented by buckets that can read an object from an
// offset; ObjectStore is then a BlobRanger.
type RangeBucket interface {
	// GetRange opens the object name for reading from byte off to its end.
	GetRange(ctx context.Context, name string, off int64) (io.ReadCloser, error)
}

// retrier is the retry policy of a store.
type retrier struct {
	name    string
	tries   int // attempts in all
	delay   time.Duration
	maxWait time.Duration
	logf    func(string, ...any)
	sleep   func(context.Context, time.Duration) error
}

func newRetrier(name string, o Options) *retrier {
	r := &retrier{name: name, tries: 1 + DefaultRetries, delay: DefaultRetryDelay, maxWait: DefaultMaxRetryWait, logf: o.Logf, sleep: sleepCtx}
	switch {
	case o.Retries < 0:
		r.tries = 1
	case o.Retries > 0:
		r.tries = 1 + o.Retries
	}
	if o.RetryDelay > 0 {
		r.delay = o.RetryDelay
	}
	if o.MaxRetryWait > 0 {
		r.maxWait = o.MaxRetryWait
	}
	if r.logf == nil {
		r.logf = func(string, ...any) {}
	}
	return r
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// opKind says which failures an operation may retry.
type opKind int

const (
	// readOp is idempotent: every transient failure is retried.
	readOp opKind = iota
	// blobPutOp puts content-addressed bytes: repeating it is harmless.
	blobPutOp
	// refPutOp publishes a ref, at most once: it is retried only when the
	// store certainly did not apply it (no connection, or an answer of 429
	// or 503), never after a failure that leaves that unknown.
	refPutOp
)

// budget counts the attempts of one operation (a blob read shares one
// between its open and its resumes).
type budget struct {
	r       *retrier
	tries   int // attempts allowed
	attempt int // attempts made so far
}

// retry decides whether the failure err of attempt b.attempt, whose
// answers ex recorded, is tried again; if so it logs it and waits. It
// returns nil to retry, or the error to return.
func (b *budget) retry(ctx context.Context, what string, kind opKind, err error, ex *exchange) error {
	why, after, ok := retryable(ctx, kind, err, ex)
	if !ok {
		return err
	}
	if b.attempt >= b.tries {
		if b.tries == 1 {
			return err
		}
		return &exhaustedError{err: err, attempts: b.attempt}
	}
	if after > b.r.maxWait {
		return &exhaustedError{err: err, attempts: b.attempt, note: fmt.Sprintf("the store asks to wait %s, more than %s", after.Round(time.Second), b.r.maxWait)}
	}
	d := b.r.delay << (b.attempt - 1)
	if d > b.r.maxWait || d <= 0 {
		d = b.r.maxWait
	}
	d = d/2 + rand.N(d/2+1)
	if after > d {
		d = after
	}
	b.r.logf("%s: %s failed (%s); retrying in %s (attempt %d of %d)", b.r.name, what, why, d.Round(time.Millisecond), b.attempt+1, b.tries)
	if f, _ := ctx.Value(retryNotifyKey{}).(func(string)); f != nil {
		f(why)
	}
	if serr := b.r.sleep(ctx, d); serr != nil {
		return err
	}
	return nil
}

type retryNotifyKey struct{}

// WithRetryNotify returns ctx with f, which the retries of WithRetries call
// (before they wait) each time they try again an operation run with ctx,
// with the reason ("HTTP 503", "network timeout", a stall): what tells a
// caller that adapts its number of requests in flight that the store
// pushes back.
func WithRetryNotify(ctx context.Context, f func(why string)) context.Context {
	return context.WithValue(ctx, retryNotifyKey{}, f)
}

// do runs op until it succeeds, fails for good, or the attempts run out.
func (b *budget) do(ctx context.Context, what string, kind opKind, op func(ctx context.Context) error) error {
	for {
		actx, ex := withExchange(ctx)
		b.attempt++
		err := op(actx)
		if err == nil {
			return nil
		}
		if err := b.retry(ctx, what, kind, err, ex); err != nil {
			return err
		}
	}
}

// exhaustedError is the last failure of an operation that was retried.
type exhaustedError struct {
	err      error
	attempts int
	note     string
}

func (e *exhaustedError) Error() string {
	if e.note != "" {
		return fmt.Sprintf("%v (%s: not retried after %d attempts)", e.err, e.note, e.attempts)
	}
	return fmt.Sprintf("%v (gave up after %d attempts)", e.err, e.attempts)
}

func (e *exhaustedError) Unwrap() error { return e.err }

// retryable classifies a failure: why it is worth another attempt, and the
// Retry-After the store asked for.
func retryable(ctx context.Context, kind opKind, err error, ex *exchange) (why string, after time.Duration, ok bool) {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "", 0, false
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, digest.ErrMismatch) || errors.Is(err, ErrInvalidKey) {
		return "", 0, false
	}
	last, transient, retryAfter := ex.get()
	if kind == refPutOp {
		// Only what proves the ref was not written: an answer that
		// declines it, or a connection that never opened.
		if last == 429 || last == 503 {
			return fmt.Sprintf("HTTP %d", last), retryAfter, true
		}
		if last == 0 && isDialError(err) {
			return "cannot connect: " + netCause(err), 0, true
		}
		return "", 0, false
	}
	if errors.Is(err, ErrStalled) {
		var se *StallError
		if errors.As(err, &se) {
			return se.Error(), 0, true
		}
		return "stalled", 0, true
	}
	if transient != 0 && (last == transient || !definiteStatus(last)) {
		return fmt.Sprintf("HTTP %d", transient), retryAfter, true
	}
	if definiteStatus(last) {
		// 401, 403, 404, 412 ...: the store answered, and retrying will
		// not change its mind.
		return "", 0, false
	}
	if isNetworkError(err) {
		return netCause(err), 0, true
	}
	return "", 0, false
}

// definiteStatus is an answer that settles an operation's failure.
func definiteStatus(code int) bool { return code >= 400 && !transientStatus(code) }

// isDialError recognises a connection that never opened, so the request
// was not applied, for a reason that may pass (a timeout, no route, a name
// that did not resolve); not a refused one.
func isDialError(err error) bool {
	ne, ok := storeerr.Unreachable(err)
	return ok && !ne.Refused
}

// isNetworkError recognises a connection that broke (reset, closed early,
// timed out) or could not be made (see storeerr.Unreachable). A refused
// connection is not one: nothing listens there, and retrying only delays
// the error.
func isNetworkError(err error) bool {
	if ne, ok := storeerr.Unreachable(err); ok {
		return !ne.Refused
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	// Some SDKs keep only the text of the cause.
	msg := err.Error()
	for _, s := range []string{"connection reset by peer", "broken pipe", "unexpected EOF", "server closed idle connection", "use of closed network connection", "transport connection broken"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func netCause(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "connection reset by peer"):
		return "connection reset"
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "unexpected EOF"):
		return "connection closed early"
	case errors.Is(err, syscall.EPIPE) || strings.Contains(err.Error(), "broken pipe"):
		return "broken pipe"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "network timeout"
	}
	return "network error"
}

// WithRetries returns st with the retry policy of opts (see Options):
// reads and blob puts are retried on a broken connection, a stall, and an
// answer of 408, 429 or 5xx (honouring Retry-After), with exponential
// backoff and jitter, at most 1+Retries attempts; a blob read cut off
// halfway resumes from the byte it reached (when st is a BlobRanger); a
// ref is published at most once; every retry logs one line through
// opts.Logf. Other failures (401, 403, 404, a digest mismatch) return at
// once, unchanged.
//
// A blob put is retried when its reader is an io.Seeker (it is rewound);
// a staged blob streams once, so StageBlob is passed on only for stores
// that stage locally (an ObjectStore over a directory): for others it
// reports errors.ErrUnsupported, and callers put the blob from a spool,
// which can be retried.
func WithRetries(st Store, opts Options) Store {
	return &Retrying{st: st, r: newRetrier(st.String(), opts)}
}

// Retrying is a Store with a retry policy (see WithRetries).
type Retrying struct {
	st Store
	r  *retrier
}

var (
	_ Store      = (*Retrying)(nil)
	_ Unwrapper  = (*Retrying)(nil)
	_ Deleter    = (*Retrying)(nil)
	_ BlobStager = (*Retrying)(nil)
	_ BlobLister = (*Retrying)(nil)
	_ RefLister  = (*Retrying)(nil)
	_ BlobRanger = (*Retrying)(nil)
)

// Unwrap implements Unwrapper: the store without retries.
func (s *Retrying) Unwrap() Store { return s.st }

// String implements Store.
func (s *Retrying) String() string { return s.st.String() }

func (s *Retrying) budget() *budget { return &budget{r: s.r, tries: s.r.tries} }

// StatBlob implements Store.
func (s *Retrying) StatBlob(ctx context.Context, d digest.Digest) (BlobInfo, error) {
	var info BlobInfo
	err := s.budget().do(ctx, "stat blob "+d.Short(), readOp, func(ctx context.Context) (err error) {
		info, err = s.st.StatBlob(ctx, d)
		return err
	})
	return info, err
}

// ListBlobs implements BlobLister when the store is one.
func (s *Retrying) ListBlobs(ctx context.Context) ([]BlobMeta, error) {
	bl, ok := As[BlobLister](s.st)
	if !ok {
		return nil, fmt.Errorf("%s: this store cannot list blobs: %w", s, errors.ErrUnsupported)
	}
	var blobs []BlobMeta
	err := s.budget().do(ctx, "list blobs", readOp, func(ctx context.Context) (err error) {
		blobs, err = bl.ListBlobs(ctx)
		return err
	})
	return blobs, err
}

// MissingBlobs implements BlobChecker when the store is one.
func (s *Retrying) MissingBlobs(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error) {
	bc, ok := As[BlobChecker](s.st)
	if !ok {
		return nil, fmt.Errorf("%s: this store cannot check blobs at once: %w", s, errors.ErrUnsupported)
	}
	var missing []digest.Digest
	err := s.budget().do(ctx, fmt.Sprintf("check %d blobs", len(ds)), readOp, func(ctx context.Context) (err error) {
		missing, err = bc.MissingBlobs(ctx, ds)
		return err
	})
	return missing, err
}

// GetBlob implements Store. The reader resumes after a transient failure.
func (s *Retrying) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	return s.getBlob(ctx, d, 0)
}

// GetBlobRange implements BlobRanger when the store is one; the reader
// resumes as GetBlob's does.
func (s *Retrying) GetBlobRange(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	if _, ok := As[BlobRanger](s.st); !ok {
		return nil, fmt.Errorf("%s: this store cannot read a blob from an offset: %w", s, errors.ErrUnsupported)
	}
	return s.getBlob(ctx, d, off)
}

func (s *Retrying) getBlob(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	b := s.budget()
	r := &resumingReader{s: s, ctx: ctx, d: d, b: b, off: off}
	what := "get blob " + d.Short()
	if off > 0 {
		what = fmt.Sprintf("get blob %s from byte %d", d.Short(), off)
	}
	err := b.do(ctx, what, readOp, func(actx context.Context) (err error) {
		r.ex = exchangeFrom(actx)
		if off == 0 {
			r.rc, err = s.st.GetBlob(actx, d)
		} else {
			r.rc, err = r.open(actx)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// resumingReader reads a blob; when a read fails for a transient reason it
// opens the blob again from the byte it reached.
type resumingReader struct {
	s   *Retrying
	ctx context.Context
	d   digest.Digest
	rc  io.ReadCloser
	b   *budget
	ex  *exchange // of the attempt that opened rc
	off int64
	err error
}

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		n, err := r.rc.Read(p)
		r.off += int64(n)
		if err == nil || err == io.EOF {
			return n, err
		}
		// Nil once the blob is open again at r.off; else the next Read
		// returns the failure.
		r.err = r.reopen(err)
		if n > 0 {
			return n, nil
		}
	}
}

// reopen retries after the read failure err: nil once the blob is open
// again at r.off, else the error to return from now on.
func (r *resumingReader) reopen(err error) error {
	r.rc.Close()
	r.rc = nil
	what := fmt.Sprintf("reading blob %s at byte %d", r.d.Short(), r.off)
	ex := r.ex
	for {
		if rerr := r.b.retry(r.ctx, what, readOp, err, ex); rerr != nil {
			return rerr
		}
		var actx context.Context
		actx, ex = withExchange(r.ctx)
		r.b.attempt++
		rc, oerr := r.open(actx)
		if oerr == nil {
			r.rc, r.ex = rc, ex
			return nil
		}
		err = oerr
	}
}

// open opens the blob at r.off: with a ranged read when the store has one,
// else from the start, skipping what was read.
func (r *resumingReader) open(ctx context.Context) (io.ReadCloser, error) {
	if br, ok := As[BlobRanger](r.s.st); ok {
		return br.GetBlobRange(ctx, r.d, r.off)
	}
	rc, err := r.s.st.GetBlob(ctx, r.d)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, rc, r.off); err != nil {
		rc.Close()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return rc, nil
}

func (r *resumingReader) Close() error {
	if r.rc == nil {
		return nil
	}
	err := r.rc.Close()
	r.rc = nil
	if r.err == nil {
		r.err = errors.New("read after close")
	}
	return err
}

// PutBlob implements Store. The put is retried when r can be rewound.
func (s *Retrying) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	seeker, ok := r.(io.Seeker)
	var start int64
	if ok {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			ok = false
		}
	}
	b := s.budget()
	if !ok {
		b.tries = 1 // the bytes stream once
	}
	first := true
	return b.do(ctx, "put blob "+d.Short(), blobPutOp, func(actx context.Context) error {
		if !first {
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return err
			}
		}
		first = false
		g := &guardReader{r: r}
		err := s.st.PutBlob(actx, d, size, g)
		g.close() // no read of r is in flight once the attempt is over
		return err
	})
}

// guardReader stops the reads of a put's source once the put returned,
// should an SDK goroutine still hold it, so that the source can be rewound.
type guardReader struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func (g *guardReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errors.New("put attempt over")
	}
	return g.r.Read(p)
}

func (g *guardReader) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// StageBlob implements BlobStager for stores that stage locally.
func (s *Retrying) StageBlob(ctx context.Context) (StagedBlob, error) {
	if obj, ok := As[*ObjectStore](s.st); ok {
		return obj.StageBlob(ctx)
	}
	if s.r.tries == 1 {
		if bs, ok := As[BlobStager](s.st); ok {
			return bs.StageBlob(ctx)
		}
	}
	return nil, errors.ErrUnsupported
}

// GetRef implements Store.
func (s *Retrying) GetRef(ctx context.Context, key string) (*Ref, error) {
	var ref *Ref
	err := s.budget().do(ctx, fmt.Sprintf("get ref %q", key), readOp, func(ctx context.Context) (err error) {
		ref, err = s.st.GetRef(ctx, key)
		return err
	})
	return ref, err
}

// PutRef implements Store: the ref is published at most once.
func (s *Retrying) PutRef(ctx context.Context, ref *Ref) error {
	return s.budget().do(ctx, fmt.Sprintf("put ref %q", ref.Key), refPutOp, func(ctx context.Context) error {
		return s.st.PutRef(ctx, ref)
	})
}

// ListRefs implements Store.
func (s *Retrying) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	err := s.budget().do(ctx, fmt.Sprintf("list refs %q", prefix), readOp, func(ctx context.Context) (err error) {
		keys, err = s.st.ListRefs(ctx, prefix)
		return err
	})
	return keys, err
}

// ListRefInfo implements RefLister when the store is one.
func (s *Retrying) ListRefInfo(ctx context.Context, prefix string) ([]RefInfo, error) {
	rl, ok := As[RefLister](s.st)
	if !ok {
		return nil, fmt.Errorf("%s: list refs %q: %w", s, prefix, errors.ErrUnsupported)
	}
	var infos []RefInfo
	err := s.budget().do(ctx, fmt.Sprintf("list refs %q", prefix), readOp, func(ctx context.Context) (err error) {
		infos, err = rl.ListRefInfo(ctx, prefix)
		return err
	})
	return infos, err
}

// DeleteRef implements Deleter.
func (s *Retrying) DeleteRef(ctx context.Context, key string) error {
	del, ok := As[Deleter](s.st)
	if !ok {
		return fmt.Errorf("%s: this store cannot delete entries: %w", s, errors.ErrUnsupported)
	}
	return s.budget().do(ctx, fmt.Sprintf("delete ref %q", key), readOp, func(ctx context.Context) error {
		return del.DeleteRef(ctx, key)
	})
}

// DeleteBlob implements Deleter.
func (s *Retrying) DeleteBlob(ctx context.Context, d digest.Digest) error {
	del, ok := As[Deleter](s.st)
	if !ok {
		return fmt.Errorf("%s: this store cannot delete blobs: %w", s, errors.ErrUnsupported)
	}
	return s.budget().do(ctx, "delete blob "+d.Short(), readOp, func(ctx context.Context) error {
		return del.DeleteBlob(ctx, d)
	})
}
