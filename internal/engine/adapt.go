package engine

import (
	"context"
	"sync"
	"time"
)

// How many transfers run at once when nothing fixes the number: a
// controller starts at a few and raises the number while the measured
// throughput keeps growing with it (a long link, where each request waits
// out its round trips), and backs off when it stops growing or the store
// pushes back.
const (
	// startUploads is the number of uploads in flight a save starts with.
	startUploads = 3
	// maxUploads bounds the uploads in flight: each holds a spooled pack,
	// up to spoolMemory (8 MiB) of it in memory, so 64 MiB at most.
	maxUploads = 8
	// maxDownloads bounds the packs downloaded (and extracted) at once.
	maxDownloads = 12
	// adaptGain is how much a window's throughput must exceed the last
	// one's for the raise that led to it to count: less is noise.
	adaptGain = 1.10
)

// transferSample is one finished transfer, as the controller sees it.
type transferSample struct {
	// at is when it ended, on the caller's clock (time since the
	// transfers began): the controller never reads a clock itself.
	at    time.Duration
	bytes int64
	// throttled: the store pushed back while it ran (an answer of 429 or
	// 503, a timeout, a stall: anything the retries tried again).
	throttled bool
	// waiting: work was waiting for a free slot when it ended, so a
	// higher limit would have started it.
	waiting bool
}

// adaptive is the controller: a pure function of the samples it is given.
// It measures the throughput over windows of as many transfers as the
// limit (each slot finishes about once a window), and after each window:
//
//   - when no work waited for a slot, the limit was not what held the
//     transfers back: it stays;
//   - when the throughput grew by adaptGain or more over the last window
//     (or this is the first), the limit rises by half (at least one), up to
//     max: more requests in flight cover more of the round trips;
//   - when it did not grow after a raise, the limit goes back to where it
//     was and stays there: the link (or the disk, or the CPU) is full;
//   - a throttled transfer halves the limit at once, and the limit never
//     rises above that again.
type adaptive struct {
	limit, min, max int
	// window being measured
	start   time.Duration
	bytes   int64
	done    int
	waiting bool
	// lastRate is the last window's throughput (bytes per second), at
	// lastLimit; zero before the first window.
	lastRate  float64
	lastLimit int
}

// newAdaptive starts at start, within [lo, hi].
func newAdaptive(start, lo, hi int) *adaptive {
	lo = max(1, lo)
	hi = max(lo, hi)
	return &adaptive{limit: min(max(start, lo), hi), min: lo, max: hi}
}

// observe takes one finished transfer and returns the limit from now on.
func (a *adaptive) observe(s transferSample) int {
	if s.throttled {
		a.limit = max(a.min, a.limit/2)
		a.max = a.limit
		a.restart(s.at)
		a.lastRate, a.lastLimit = 0, 0
		return a.limit
	}
	a.bytes += s.bytes
	a.done++
	a.waiting = a.waiting || s.waiting
	if a.done < a.limit {
		return a.limit
	}
	el := max(s.at-a.start, time.Nanosecond)
	rate := float64(a.bytes) / el.Seconds()
	waiting := a.waiting
	a.restart(s.at)
	switch {
	case !waiting:
		// Not limited by the number in flight: nothing to learn.
		a.lastRate, a.lastLimit = rate, a.limit
	case a.lastRate == 0 || rate >= a.lastRate*adaptGain:
		a.lastRate, a.lastLimit = rate, a.limit
		a.limit = min(a.max, a.limit+max(1, a.limit/2))
	case a.limit > a.lastLimit:
		// The last raise bought nothing: undo it, and stop there.
		a.limit, a.max = a.lastLimit, a.lastLimit
	}
	return a.limit
}

func (a *adaptive) restart(at time.Duration) {
	a.start, a.bytes, a.done, a.waiting = at, 0, 0, false
}

// gate admits at most limit transfers at once, the limit following an
// adaptive controller (or fixed: lo == hi). It counts the peak in flight.
type gate struct {
	mu       sync.Mutex
	ctl      *adaptive
	inFlight int
	peak     int
	waiters  int
	changed  chan struct{} // closed, and replaced, when a slot frees or the limit changes
	begin    time.Time
	now      func() time.Time
}

func newGate(ctl *adaptive) *gate {
	return &gate{ctl: ctl, changed: make(chan struct{}), begin: time.Now(), now: time.Now}
}

// acquire waits for a slot, or for ctx to end.
func (g *gate) acquire(ctx context.Context) error {
	g.mu.Lock()
	for g.inFlight >= g.ctl.limit {
		ch := g.changed
		g.waiters++
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			g.mu.Lock()
			g.waiters--
			g.mu.Unlock()
			return ctx.Err()
		}
		g.mu.Lock()
		g.waiters--
	}
	g.inFlight++
	g.peak = max(g.peak, g.inFlight)
	g.mu.Unlock()
	return nil
}

// release frees a slot and reports the transfer that held it (bytes moved,
// and whether the store pushed back) to the controller. A transfer that
// failed reports nothing but its slot.
func (g *gate) release(bytes int64, throttled, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight--
	if ok || throttled {
		g.ctl.observe(transferSample{at: g.now().Sub(g.begin), bytes: bytes, throttled: throttled, waiting: g.waiters > 0})
	}
	close(g.changed)
	g.changed = make(chan struct{})
}

// peakInFlight is the most transfers that ran at once.
func (g *gate) peakInFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak
}
