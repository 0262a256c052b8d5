package cli

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// idleWatch gives up on a store that stops answering: while a request is in
// flight and no byte has moved for the idle limit, it cancels the command.
// --timeout bounds the whole command; this catches a stall early.
type idleWatch struct {
	last     atomic.Int64 // unix nanoseconds of the last activity
	inflight atomic.Int32
	fired    atomic.Bool
}

func (w *idleWatch) touch() { w.last.Store(time.Now().UnixNano()) }

// begin marks a request in flight; the func it returns ends it.
func (w *idleWatch) begin() func() {
	w.inflight.Add(1)
	w.touch()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.touch()
			w.inflight.Add(-1)
		})
	}
}

// watchIdle wraps st so that its requests are watched, and cancels the
// command (cancel) after idle without activity. stop ends the watch.
func watchIdle(st store.Store, idle time.Duration, cancel context.CancelFunc) (store.Store, *idleWatch, func()) {
	w := &idleWatch{}
	w.touch()
	if idle <= 0 {
		return st, w, func() {}
	}
	done, exited := make(chan struct{}), make(chan struct{})
	t := time.NewTicker(min(idle/4, time.Second))
	go func() {
		defer close(exited)
		for {
			select {
			case <-t.C:
				if w.inflight.Load() > 0 && time.Since(time.Unix(0, w.last.Load())) >= idle {
					w.fired.Store(true)
					cancel()
					return
				}
			case <-done:
				return
			}
		}
	}()
	return &watchedStore{Store: st, w: w}, w, func() { t.Stop(); close(done); <-exited }
}

// watchedStore forwards every call to Store, marking it in flight and
// counting the bytes that move.
type watchedStore struct {
	store.Store
	w *idleWatch
}

// Unwrap implements store.Unwrapper.
func (s *watchedStore) Unwrap() store.Store { return s.Store }

func (s *watchedStore) StatBlob(ctx context.Context, d digest.Digest) (store.BlobInfo, error) {
	defer s.w.begin()()
	return s.Store.StatBlob(ctx, d)
}

func (s *watchedStore) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	end := s.w.begin()
	rc, err := s.Store.GetBlob(ctx, d)
	if err != nil {
		end()
		return nil, err
	}
	return &watchedReader{r: rc, c: rc, w: s.w, end: end}, nil
}

func (s *watchedStore) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	defer s.w.begin()()
	return s.Store.PutBlob(ctx, d, size, &watchedReader{r: r, w: s.w, end: func() {}})
}

func (s *watchedStore) GetRef(ctx context.Context, key string) (*store.Ref, error) {
	defer s.w.begin()()
	return s.Store.GetRef(ctx, key)
}

func (s *watchedStore) PutRef(ctx context.Context, ref *store.Ref) error {
	defer s.w.begin()()
	return s.Store.PutRef(ctx, ref)
}

func (s *watchedStore) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	defer s.w.begin()()
	return s.Store.ListRefs(ctx, prefix)
}

// ListRefInfo is the store's listing with times (store.RefLister), when it
// has one: a restore key orders its reads by it.
func (s *watchedStore) ListRefInfo(ctx context.Context, prefix string) ([]store.RefInfo, error) {
	rl, ok := store.As[store.RefLister](s.Store)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	defer s.w.begin()()
	return rl.ListRefInfo(ctx, prefix)
}

// StageBlob keeps the store's staging (packs written straight into it), or
// says it has none, as the engine expects.
func (s *watchedStore) StageBlob(ctx context.Context) (store.StagedBlob, error) {
	sb, err := store.StageBlob(ctx, s.Store)
	if err != nil {
		return nil, err
	}
	return &watchedStaged{StagedBlob: sb, w: s.w}, nil
}

type watchedStaged struct {
	store.StagedBlob
	w *idleWatch
}

func (s *watchedStaged) Write(p []byte) (int, error) {
	defer s.w.begin()()
	return s.StagedBlob.Write(p)
}

func (s *watchedStaged) Commit(ctx context.Context, d digest.Digest, size int64) error {
	defer s.w.begin()()
	return s.StagedBlob.Commit(ctx, d, size)
}

type watchedReader struct {
	r   io.Reader
	c   io.Closer
	w   *idleWatch
	end func()
}

func (r *watchedReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.w.touch()
	}
	return n, err
}

func (r *watchedReader) Close() error {
	r.end()
	if r.c == nil {
		return nil
	}
	return r.c.Close()
}
