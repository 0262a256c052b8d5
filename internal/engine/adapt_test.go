package engine

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
)

// feed runs the controller over windows of synthetic transfers of size
// bytes each, on a link whose throughput at k transfers in flight is
// rate(k) bytes a second (the transfers end evenly spaced), every one with
// work waiting; it returns the limit after each window.
func feed(a *adaptive, windows int, size int64, rate func(k int) float64) []int {
	var at time.Duration
	var limits []int
	for range windows {
		k := a.limit
		for range k {
			at += time.Duration(float64(size) / rate(k) * float64(time.Second))
			a.observe(transferSample{at: at, bytes: size, waiting: true})
		}
		limits = append(limits, a.limit)
	}
	return limits
}

// A long link: each request waits out its round trips, so the throughput
// grows with the requests in flight until the cap.
func TestAdaptiveGrowsWithLatency(t *testing.T) {
	a := newAdaptive(3, 1, 8)
	got := feed(a, 6, 9<<20, func(k int) float64 { return float64(k) * 30e6 })
	if want := []int{4, 6, 8, 8, 8, 8}; !slices.Equal(got, want) {
		t.Errorf("limits %v, want %v", got, want)
	}
}

// A full link: the throughput is the same whatever the number in flight.
// The first raise buys nothing and is undone, and the limit stays there.
func TestAdaptiveStopsWhenThroughputIsFlat(t *testing.T) {
	a := newAdaptive(3, 1, 8)
	got := feed(a, 6, 9<<20, func(int) float64 { return 100e6 })
	if want := []int{4, 3, 3, 3, 3, 3}; !slices.Equal(got, want) {
		t.Errorf("limits %v, want %v", got, want)
	}
}

// The link fills at 5 in flight: growth stops at the first level past it,
// and goes back to the one before.
func TestAdaptiveStopsAtTheKnee(t *testing.T) {
	a := newAdaptive(2, 1, 16)
	got := feed(a, 8, 1<<20, func(k int) float64 { return float64(min(k, 5)) * 10e6 })
	// 2 -> 3 -> 4 -> 6 (each +25% or more) -> 9 (no gain over 6) -> back to 6.
	if want := []int{3, 4, 6, 9, 6, 6, 6, 6}; !slices.Equal(got, want) {
		t.Errorf("limits %v, want %v", got, want)
	}
}

// Throughput that grows by less than adaptGain is noise: no raise counts.
func TestAdaptiveIgnoresSmallGains(t *testing.T) {
	a := newAdaptive(4, 1, 8)
	got := feed(a, 4, 1<<20, func(k int) float64 { return 50e6 + float64(k)*1e6 })
	if want := []int{6, 4, 4, 4}; !slices.Equal(got, want) {
		t.Errorf("limits %v, want %v", got, want)
	}
}

// A throttled transfer (429, 503, a timeout: anything retried) halves the
// limit at once, and the limit never climbs back over it.
func TestAdaptiveBacksOffWhenThrottled(t *testing.T) {
	a := newAdaptive(3, 1, 8)
	feed(a, 3, 1<<20, func(k int) float64 { return float64(k) * 10e6 })
	if a.limit != 8 {
		t.Fatalf("limit %d before throttling, want 8", a.limit)
	}
	if got := a.observe(transferSample{at: time.Hour, throttled: true}); got != 4 {
		t.Fatalf("limit %d after a throttled transfer, want 4", got)
	}
	got := feed(a, 4, 1<<20, func(k int) float64 { return float64(k) * 10e6 })
	if want := []int{4, 4, 4, 4}; !slices.Equal(got, want) {
		t.Errorf("limits after throttling %v, want %v", got, want)
	}
	for range 5 {
		a.observe(transferSample{throttled: true})
	}
	if a.limit != 1 {
		t.Errorf("limit %d after repeated throttling, want the floor 1", a.limit)
	}
}

// When no work waits for a slot, the limit is not what holds the transfers
// back (the producer is slower): it does not move, whatever the rate.
func TestAdaptiveNeedsWaitingWork(t *testing.T) {
	a := newAdaptive(3, 1, 8)
	var at time.Duration
	for i := range 30 {
		at += time.Duration(100-i*3) * time.Millisecond // faster and faster
		a.observe(transferSample{at: at, bytes: 1 << 20})
	}
	if a.limit != 3 {
		t.Errorf("limit %d with no work waiting, want 3", a.limit)
	}
}

func TestAdaptiveBounds(t *testing.T) {
	if a := newAdaptive(3, 1, 2); a.limit != 2 {
		t.Errorf("start 3 capped at 2: limit %d", a.limit)
	}
	if a := newAdaptive(0, 0, 0); a.limit != 1 || a.max != 1 {
		t.Errorf("zero bounds: limit %d, max %d; want 1, 1", a.limit, a.max)
	}
	// A fixed number (lo == hi) never moves.
	a := newAdaptive(4, 4, 4)
	feed(a, 4, 1<<20, func(k int) float64 { return float64(k) * 10e6 })
	if a.observe(transferSample{throttled: true}); a.limit != 4 {
		t.Errorf("a fixed limit moved to %d", a.limit)
	}
}

// The gate admits no more than the limit and counts the peak; a waiter
// gives up when its context ends.
func TestGate(t *testing.T) {
	g := newGate(newAdaptive(2, 2, 2))
	ctx := context.Background()
	for range 2 {
		if err := g.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = g.acquire(cctx) })
	cancel()
	wg.Wait()
	if err == nil {
		t.Fatal("a third acquire got a slot, or did not give up")
	}
	g.release(1, false, true)
	if err := g.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if p := g.peakInFlight(); p != 2 {
		t.Errorf("peak %d, want 2", p)
	}
}

// slowStore answers blob puts and gets after a fixed latency, as a store
// at the end of a long link does (the bytes themselves cost nothing), and
// counts the most that were in flight at once. It has no capability but
// Store's (no StageBlob): packs go from a spool, as to a registry.
type slowStore struct {
	store.Store
	latency time.Duration

	mu                 sync.Mutex
	puts, gets         int
	peakPuts, peakGets int
}

func (s *slowStore) enter(n, peak *int) func() {
	s.mu.Lock()
	*n++
	*peak = max(*peak, *n)
	s.mu.Unlock()
	time.Sleep(s.latency)
	return func() {
		s.mu.Lock()
		*n--
		s.mu.Unlock()
	}
}

func (s *slowStore) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	defer s.enter(&s.puts, &s.peakPuts)()
	return s.Store.PutBlob(ctx, d, size, r)
}

func (s *slowStore) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	defer s.enter(&s.gets, &s.peakGets)()
	return s.Store.GetBlob(ctx, d)
}

// TestTransfersInFlightRiseWithLatency: behind a store whose every request
// takes 100 ms, the uploads of a save and the downloads of a restore in
// flight rise past where they start (3 and 4) towards their caps, counted
// by the store; with the number fixed (Uploads 2, Jobs 2) they never pass it.
func TestTransfersInFlightRiseWithLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("about 10 s of latency")
	}
	src := t.TempDir()
	for i := range 60 {
		data := make([]byte, 32<<10)
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Latency far above what packing 32 KiB costs on a loaded machine, so
	// that the uploads, not the packers, are what a save waits for.
	slow := &slowStore{Store: memory.NewStore("t"), latency: 200 * time.Millisecond}
	res, err := Save(context.Background(), slow, SaveOptions{Key: "k", Folders: []string{src}, PackSize: 32 << 10, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if res.NewPacks != 60 {
		t.Fatalf("%d packs, want 60", res.NewPacks)
	}
	if slow.peakPuts <= startUploads+2 || slow.peakPuts > maxUploads {
		t.Errorf("at most %d uploads in flight, want more than %d, at most %d", slow.peakPuts, startUploads+2, maxUploads)
	}
	dst := t.TempDir()
	if r, err := Restore(context.Background(), slow, RestoreOptions{Key: "k", Folders: []string{dst}}); err != nil || !r.Restored {
		t.Fatalf("Restore: %+v, %v", r, err)
	}
	jobs := max(4, runtime.GOMAXPROCS(0))
	t.Logf("peak in flight: %d uploads, %d downloads", slow.peakPuts, slow.peakGets)
	if slow.peakGets <= jobs+2 || slow.peakGets > maxDownloads {
		t.Errorf("at most %d downloads in flight, want more than %d, at most %d", slow.peakGets, jobs+2, maxDownloads)
	}

	// Fixed numbers are caps.
	fixed := &slowStore{Store: memory.NewStore("t"), latency: 20 * time.Millisecond}
	if _, err := Save(context.Background(), fixed, SaveOptions{Key: "k", Folders: []string{src}, PackSize: 32 << 10, Uploads: 2}); err != nil {
		t.Fatal(err)
	}
	if r, err := Restore(context.Background(), fixed, RestoreOptions{Key: "k", Folders: []string{t.TempDir()}, Jobs: 2}); err != nil || !r.Restored {
		t.Fatalf("Restore: %+v, %v", r, err)
	}
	if fixed.peakPuts > 2 || fixed.peakGets > 2 {
		t.Errorf("%d uploads and %d downloads in flight, with both fixed at 2", fixed.peakPuts, fixed.peakGets)
	}
}
