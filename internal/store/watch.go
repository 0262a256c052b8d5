package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// DefaultStallTimeout is how long a request may go without progress before
// it is cut (Options.StallTimeout).
const DefaultStallTimeout = 60 * time.Second

// ErrStalled is wrapped by the error of a request that made no progress
// for the stall timeout and was cut.
var ErrStalled = errors.New("stalled")

// StallError is the error of a request cut for lack of progress.
type StallError struct {
	// Timeout is the stall timeout that passed without progress.
	Timeout time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("stalled: no progress for %s, connection cut", e.Timeout)
}

// Unwrap gives ErrStalled.
func (e *StallError) Unwrap() error { return ErrStalled }

// Doer sends an HTTP request, as *http.Client does. The AWS and Azure SDKs
// take one in place of a transport.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// WatchTransport returns base (http.DefaultTransport when nil) with two
// additions every backend's HTTP client gets:
//
//   - stall detection: a request that makes no progress for stall (while
//     it waits on the network: connecting, sending its body, waiting for
//     the answer, reading the answer's body) is cut, and fails with a
//     *StallError. Time spent waiting on the caller (a slow reader of the
//     answer, a slow source of the body) does not count. stall <= 0
//     disables it.
//   - the retry layer (see WithRetries) learns the status and Retry-After
//     of every answer of the operation it runs.
func WatchTransport(base http.RoundTripper, stall time.Duration) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &watchTransport{do: base.RoundTrip, stall: stall}
}

// WatchDoer is WatchTransport for an SDK that takes a Doer.
func WatchDoer(base Doer, stall time.Duration) Doer {
	return &watchTransport{do: base.Do, stall: stall}
}

type watchTransport struct {
	do    func(*http.Request) (*http.Response, error)
	stall time.Duration
}

// Do implements Doer.
func (t *watchTransport) Do(req *http.Request) (*http.Response, error) { return t.RoundTrip(req) }

// RoundTrip implements http.RoundTripper.
func (t *watchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := exchangeFrom(req.Context())
	ex.begin()
	if t.stall <= 0 {
		resp, err := t.do(req)
		ex.observe(resp)
		return resp, err
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	w := &watchdog{timeout: t.stall}
	w.timer = time.AfterFunc(t.stall, func() { cancel(&StallError{Timeout: t.stall}) })
	w.timer.Stop()
	w.set(&w.sending, true) // connecting
	out := req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = &watchedBody{rc: req.Body, w: w}
	}
	if req.GetBody != nil {
		out.GetBody = func() (io.ReadCloser, error) {
			rc, err := req.GetBody()
			if err != nil || rc == http.NoBody {
				return rc, err
			}
			return &watchedBody{rc: rc, w: w}, nil
		}
	}
	resp, err := t.do(out)
	w.set(&w.sending, false)
	if err != nil {
		w.stop()
		stalled := stallCause(ctx)
		cancel(nil)
		if stalled != nil {
			return nil, stalled
		}
		return nil, err
	}
	ex.observe(resp)
	resp.Body = &watchedResponse{rc: resp.Body, w: w, ctx: ctx, cancel: cancel}
	return resp, nil
}

func stallCause(ctx context.Context) error {
	var se *StallError
	if errors.As(context.Cause(ctx), &se) {
		return se
	}
	return nil
}

// watchdog runs its timer while a request waits on the network: while it
// sends (between two reads of its body, and until the answer) or while a
// read of the answer's body is in progress. Each change restarts it.
type watchdog struct {
	mu      sync.Mutex
	timer   *time.Timer
	timeout time.Duration
	sending bool
	reading bool
	stopped bool
}

func (w *watchdog) set(flag *bool, v bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	*flag = v
	if w.stopped {
		return
	}
	if w.sending || w.reading {
		w.timer.Reset(w.timeout)
	} else {
		w.timer.Stop()
	}
}

func (w *watchdog) stop() {
	w.mu.Lock()
	w.stopped = true
	w.timer.Stop()
	w.mu.Unlock()
}

// watchedBody is a request body: the network waits while it is not being read.
type watchedBody struct {
	rc io.ReadCloser
	w  *watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.set(&b.w.sending, false)
	n, err := b.rc.Read(p)
	b.w.set(&b.w.sending, true)
	return n, err
}

func (b *watchedBody) Close() error { return b.rc.Close() }

// watchedResponse is an answer's body: the network is waited on during Read.
type watchedResponse struct {
	rc     io.ReadCloser
	w      *watchdog
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (r *watchedResponse) Read(p []byte) (int, error) {
	r.w.set(&r.w.reading, true)
	n, err := r.rc.Read(p)
	r.w.set(&r.w.reading, false)
	if err != nil && err != io.EOF {
		if stalled := stallCause(r.ctx); stalled != nil {
			err = stalled
		}
	}
	return n, err
}

func (r *watchedResponse) Close() error {
	r.w.stop()
	err := r.rc.Close()
	r.cancel(nil)
	return err
}

// exchange records, for one attempt of an operation of the retry layer,
// the answers its requests got.
type exchange struct {
	mu sync.Mutex
	// last is the status of the answer to the last request (0: none, or
	// not yet).
	last int
	// transient is the last answer that asks for a retry (429, 5xx ...),
	// with its Retry-After.
	transient  int
	retryAfter time.Duration
}

type exchangeKey struct{}

func withExchange(ctx context.Context) (context.Context, *exchange) {
	ex := &exchange{}
	return context.WithValue(ctx, exchangeKey{}, ex), ex
}

func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// transientStatus are the answers that say "not now": a retry may work.
func transientStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// begin notes that a request starts: until it is answered, the operation's
// last answer is none, so that a request that fails without one is not
// judged by the answer of the request before it.
func (ex *exchange) begin() {
	if ex == nil {
		return
	}
	ex.mu.Lock()
	ex.last = 0
	ex.mu.Unlock()
}

func (ex *exchange) observe(resp *http.Response) {
	if ex == nil || resp == nil {
		return
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.last = resp.StatusCode
	if transientStatus(resp.StatusCode) {
		ex.transient = resp.StatusCode
		ex.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
}

func (ex *exchange) get() (last, transient int, retryAfter time.Duration) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.last, ex.transient, ex.retryAfter
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
