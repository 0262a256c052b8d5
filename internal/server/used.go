package server

import (
	"context"
	"sync"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// DefaultRecordUseEvery is how often, at most, the server rewrites the
// last-use record of a ref it answers.
const DefaultRecordUseEvery = time.Hour

// recordParallel bounds the last-use records being written at once; a
// restore that finds them all busy is not recorded (the next one is).
const recordParallel = 4

// usage records when refs are restored (gc.RecordUse), in the backing
// store's records, so that every replica's GC sees every replica's
// restores. Each ref's record is rewritten at most once per every: a map
// of when this server last wrote each one avoids rewriting it on each
// restore (a restart writes each one once more).
type usage struct {
	meta  store.MetaStore
	now   func() time.Time
	every time.Duration
	logf  func(string, ...any)
	sem   chan struct{}

	mu      sync.Mutex
	written map[string]time.Time // by backing key
}

// touch records that the ref of backing key sk was restored now, unless
// this server recorded it less than every ago. The caller has sent its
// answer whole already: the record costs the client nothing, and the
// request (which a graceful shutdown waits for) ends once it is written.
func (u *usage) touch(ctx context.Context, sk string) {
	if u == nil {
		return
	}
	now := u.now()
	u.mu.Lock()
	if t, ok := u.written[sk]; ok && now.Sub(t) < u.every && !now.Before(t) {
		u.mu.Unlock()
		return
	}
	select {
	case u.sem <- struct{}{}:
	default:
		u.mu.Unlock()
		return
	}
	if len(u.written) >= 100_000 {
		for k, t := range u.written {
			if now.Sub(t) >= u.every {
				delete(u.written, k)
			}
		}
	}
	u.written[sk] = now
	u.mu.Unlock()
	defer func() { <-u.sem }()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := gc.RecordUse(ctx, u.meta, sk, now); err != nil {
		u.logf("warning: %v", err)
		u.mu.Lock()
		if u.written[sk].Equal(now) {
			delete(u.written, sk) // the next restore tries again
		}
		u.mu.Unlock()
	}
}
