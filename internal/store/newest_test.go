package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

// timedStore is a store whose listing gives the times the test chose, and
// which counts the refs read.
type timedStore struct {
	store.Store
	mu       sync.Mutex
	modified map[string]time.Time // zero: the listing has no time
	gone     map[string]bool      // listed, but deleted before it is read
	fail     error                // what GetRef answers, when set
	reads    atomic.Int64
}

func newTimedStore(t *testing.T) *timedStore {
	return &timedStore{Store: memory.NewStore(t.Name()), modified: map[string]time.Time{}, gone: map[string]bool{}}
}

// Unwrap implements store.Unwrapper.
func (s *timedStore) Unwrap() store.Store { return s.Store }

// put saves an entry created at created whose ref the listing says was
// written at modified.
func (s *timedStore) put(t *testing.T, key string, created, modified time.Time) {
	t.Helper()
	if err := s.PutRef(t.Context(), storetest.NewRef(t, s, key, created, 0)); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.modified[key] = modified
	s.mu.Unlock()
}

func (s *timedStore) ListRefInfo(ctx context.Context, prefix string) ([]store.RefInfo, error) {
	keys, err := s.ListRefs(ctx, prefix)
	s.mu.Lock()
	defer s.mu.Unlock()
	infos := make([]store.RefInfo, len(keys))
	for i, k := range keys {
		infos[i] = store.RefInfo{Key: k, Modified: s.modified[k]}
	}
	return infos, err
}

func (s *timedStore) GetRef(ctx context.Context, key string) (*store.Ref, error) {
	s.reads.Add(1)
	switch {
	case s.fail != nil:
		return nil, s.fail
	case s.gone[key]:
		return nil, fmt.Errorf("%s: %w", key, store.ErrNotFound)
	}
	return s.Store.GetRef(ctx, key)
}

// wantNewest checks that Newest of "go-" through st (s or a wrapper of it)
// is want, after at most maxReads reads of s.
func (s *timedStore) wantNewest(t *testing.T, st store.Store, want string) {
	t.Helper()
	s.reads.Store(0)
	got, err := store.Newest(t.Context(), st, "go-")
	if err != nil || got.Key != want || s.reads.Load() > maxReads {
		t.Fatalf("Newest = %v, %v after %d reads; want %s after at most %d", got, err, s.reads.Load(), want, maxReads)
	}
}

// maxReads is the bound on the refs Newest reads when the listing's times
// are save times, whatever the number of keys (store.hintWindow).
const maxReads = 16

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// saves puts n entries go-0000 ... saved a minute apart, each ref written
// 100ms after its Created, and returns the newest one's key.
func (s *timedStore) saves(t *testing.T, n int) string {
	for i := range n {
		created := t0.Add(time.Duration(i) * time.Minute)
		s.put(t, fmt.Sprintf("go-%04d", i), created, created.Add(100*time.Millisecond))
	}
	return fmt.Sprintf("go-%04d", n-1)
}

// TestNewestReadsBounded: with the times of an object store's listing, the
// newest entry costs a bounded number of ref reads at 50 and 500 entries,
// and Candidates still gives every ref in NewestFirst's order.
func TestNewestReadsBounded(t *testing.T) {
	for _, n := range []int{50, 500} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := newTimedStore(t)
			want := s.saves(t, n)
			s.put(t, "other-newest", t0.Add(time.Hour*24), t0.Add(time.Hour*24))
			s.wantNewest(t, s, want)
			var keys []string
			for r, err := range store.Candidates(t.Context(), s, "go-") {
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, r.Key)
			}
			all, err := store.NewestFirst(t.Context(), s, "go-")
			if err != nil {
				t.Fatal(err)
			}
			var wantKeys []string
			for _, r := range all {
				wantKeys = append(wantKeys, r.Key)
			}
			if !slices.Equal(keys, wantKeys) {
				t.Fatalf("Candidates gave %d keys %v..., want NewestFirst's %v...", len(keys), keys[:3], wantKeys[:3])
			}
		})
	}
}

// TestNewestBeyondMaxCandidates: with save times, a prefix of more than
// MaxRestoreCandidates keys is no longer refused.
func TestNewestBeyondMaxCandidates(t *testing.T) {
	s := newTimedStore(t)
	s.wantNewest(t, s, s.saves(t, store.MaxRestoreCandidates+1))
}

// TestNewestFewUntimedOfMany: a few refs without a time among more than
// MaxRestoreCandidates (an OCI save that lost a race) are read; the prefix
// is not refused.
func TestNewestFewUntimedOfMany(t *testing.T) {
	s := newTimedStore(t)
	want := s.saves(t, store.MaxRestoreCandidates+1)
	s.put(t, "go-lost", t0, time.Time{})
	s.wantNewest(t, s, want)
}

// TestNewestClockSkew: a ref whose saver's clock ran ahead of the store's
// (Created after the ref's Modified, within the allowance) still wins,
// although ten refs were written after it.
func TestNewestClockSkew(t *testing.T) {
	s := newTimedStore(t)
	s.saves(t, 30)
	last := t0.Add(time.Hour)
	for i := range 10 {
		m := last.Add(time.Duration(i) * 10 * time.Millisecond)
		s.put(t, fmt.Sprintf("go-burst-%d", i), m.Add(-50*time.Millisecond), m)
	}
	s.put(t, "go-skewed", last.Add(time.Second), last.Add(-500*time.Millisecond))
	s.wantNewest(t, s, "go-skewed")
}

// TestNewestBurst: more saves than the window within the listing's
// resolution: Newest stays bounded and gives one of the latest written.
func TestNewestBurst(t *testing.T) {
	s := newTimedStore(t)
	s.saves(t, 100)
	last := t0.Add(200 * time.Hour)
	for i := range 100 {
		s.put(t, fmt.Sprintf("go-burst-%03d", i), last.Add(time.Duration(i)*time.Millisecond), last)
	}
	s.reads.Store(0)
	got, err := store.Newest(t.Context(), s, "go-")
	if err != nil || got.Created.Before(last) || s.reads.Load() > maxReads {
		t.Fatalf("Newest = %v, %v after %d reads; want a go-burst- entry after at most %d", got, err, s.reads.Load(), maxReads)
	}
}

// TestNewestTimesNotSaveTimes: when the listing's times are far from the
// refs' Created (a bucket copied: every object written at the copy), every
// ref is read and the newest by Created still wins.
func TestNewestTimesNotSaveTimes(t *testing.T) {
	s := newTimedStore(t)
	copied := t0.Add(365 * 24 * time.Hour)
	for i := range 40 {
		// Copied newest first: the newest entry has the oldest time.
		s.put(t, fmt.Sprintf("go-%04d", i), t0.Add(time.Duration(i)*time.Hour), copied.Add(-time.Duration(i)*time.Second))
	}
	s.reads.Store(0)
	got, err := store.Newest(t.Context(), s, "go-")
	if err != nil || got.Key != "go-0039" {
		t.Fatalf("Newest = %v, %v; want go-0039 (the latest Created)", got, err)
	}
	if r := s.reads.Load(); r != 40 {
		t.Fatalf("Newest read %d refs, want all 40", r)
	}
	// As NewestFirst, more than MaxRestoreCandidates is then refused.
	for i := range store.MaxRestoreCandidates {
		s.put(t, fmt.Sprintf("go-more-%04d", i), t0, copied)
	}
	if _, err := store.Newest(t.Context(), s, "go-"); err == nil {
		t.Fatal("Newest over more than MaxRestoreCandidates keys with copied times succeeded")
	}
}

// TestNewestUntimed: a ref the listing has no time for is read, and wins
// when it is the newest.
func TestNewestUntimed(t *testing.T) {
	s := newTimedStore(t)
	s.saves(t, 50)
	s.put(t, "go-untimed", t0.Add(time.Hour), time.Time{})
	s.wantNewest(t, s, "go-untimed")
}

// TestCandidatesGoneAndFailing: a ref deleted since the listing is left
// out; a store that fails to read one gives its error, once, last.
func TestCandidatesGoneAndFailing(t *testing.T) {
	s := newTimedStore(t)
	s.saves(t, 20)
	s.gone["go-0019"] = true
	s.wantNewest(t, s, "go-0018")
	if _, err := store.Newest(t.Context(), s, "py-"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Newest(py-) = %v, want ErrNotFound", err)
	}
	s.fail = errors.New("boom")
	var errs int
	for r, err := range store.Candidates(t.Context(), s, "go-") {
		if r != nil || !errors.Is(err, s.fail) {
			t.Fatalf("Candidates gave %v, %v; want only the store's error", r, err)
		}
		errs++
	}
	if errs != 1 {
		t.Fatalf("Candidates gave the error %d times, want once", errs)
	}
}

// TestCandidatesThroughWrappers: the times are found through the checked
// and retrying layers of an opened store.
func TestCandidatesThroughWrappers(t *testing.T) {
	s := newTimedStore(t)
	s.wantNewest(t, store.Checked(store.WithRetries(s, store.Options{})), s.saves(t, 200))
}

// TestNewestUntimedMany: more refs without a time than the window are all
// read, and the refs with a time are still read after them: the newest of
// those wins.
func TestNewestUntimedMany(t *testing.T) {
	s := newTimedStore(t)
	want := s.saves(t, 30)
	for i := range 20 {
		s.put(t, fmt.Sprintf("go-old-%02d", i), t0.Add(-time.Duration(i)*time.Hour), time.Time{})
	}
	got, err := store.Newest(t.Context(), s, "go-")
	if err != nil || got.Key != want {
		t.Fatalf("Newest = %v, %v; want %s", got, err, want)
	}
}
