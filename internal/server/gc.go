package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// LeaseRecord is the name of the record (store.MetaStore) that says which
// replica runs the GC, until when.
const LeaseRecord = "gc-lease"

// CollectorOptions configure a Collector.
type CollectorOptions struct {
	// TTL evicts the entries not restored (nor saved) for this long (0: no
	// age rule).
	TTL time.Duration
	// MaxSize evicts the least recently used entries while the blobs of
	// the rest, each counted once, are over MaxSize bytes (0: no size rule).
	MaxSize int64
	// Grace is the blob sweep's grace period (gc.Policy.Grace).
	Grace time.Duration
	// Interval is how often Run collects, and how long a replica's lease
	// lasts: with several replicas over one store, one GC runs per Interval.
	Interval time.Duration
	// Holder names this replica in the lease (a host name and a random
	// suffix, say).
	Holder string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logf receives what the GC does; nil is silent.
	Logf func(format string, args ...any)
	// Metrics, when set (a Server's), count the runs, what they evict and
	// the store's failures.
	Metrics *Metrics
	// Internal, when set, says which refs are another front end's
	// bookkeeping (gha.Internal): never evicted nor counted, their blobs
	// kept (gc.Options.Internal).
	Internal func(key string) bool
}

// Collector evicts entries from a store by last use (gc.Prune with
// Options.ByUse), one replica at a time.
type Collector struct {
	st store.Store
	o  CollectorOptions

	mu       sync.Mutex
	observer func(ctx context.Context, now time.Time, kept []*store.Ref) // the status page's
}

// observe has f called after each run with the entries it kept.
func (c *Collector) observe(f func(ctx context.Context, now time.Time, kept []*store.Ref)) {
	c.mu.Lock()
	c.observer = f
	c.mu.Unlock()
}

// NewCollector returns the collector of st.
func NewCollector(st store.Store, o CollectorOptions) (*Collector, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Interval <= 0 {
		return nil, errors.New("the GC interval must be positive")
	}
	if o.Holder == "" {
		return nil, errors.New("the GC needs a holder name for its lease")
	}
	if o.Metrics != nil {
		st = o.Metrics.countErrors(st)
	}
	c := &Collector{st: st, o: o}
	if err := c.policy().Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Collector) policy() gc.Policy {
	return gc.Policy{OlderThan: c.o.TTL, MaxSize: c.o.MaxSize, Grace: c.o.Grace}
}

// leaseFile is the JSON of the lease record.
type leaseFile struct {
	Format  int       `json:"format"`
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// readLease reads the lease; a missing or unreadable one is none.
func readLease(ctx context.Context, meta store.MetaStore) (leaseFile, error) {
	data, err := meta.GetMeta(ctx, LeaseRecord)
	if errors.Is(err, store.ErrNotFound) {
		return leaseFile{}, nil
	}
	if err != nil {
		return leaseFile{}, err
	}
	var l leaseFile
	if json.Unmarshal(data, &l) != nil || l.Format != 1 {
		return leaseFile{}, nil
	}
	return l, nil
}

// takeLease takes (or renews) the lease for one interval from now, unless
// another holder has it: read, check, write, then read again to confirm
// that no replica wrote after us. The lease is untrusted: one that expires
// more than two intervals ahead (a forged or a skewed one) counts as
// expired, so it stops the GC for two intervals at most.
func (c *Collector) takeLease(ctx context.Context, meta store.MetaStore, now time.Time) (bool, error) {
	l, err := readLease(ctx, meta)
	if err != nil {
		return false, fmt.Errorf("reading the GC lease: %w", err)
	}
	if l.Holder != "" && l.Holder != c.o.Holder && now.Before(l.Expires) && l.Expires.Sub(now) <= 2*c.o.Interval {
		return false, nil
	}
	data, err := json.Marshal(leaseFile{Format: 1, Holder: c.o.Holder, Expires: now.Add(c.o.Interval).UTC()})
	if err != nil {
		return false, err
	}
	if err := meta.PutMeta(ctx, LeaseRecord, data); err != nil {
		return false, fmt.Errorf("taking the GC lease: %w", err)
	}
	l, err = readLease(ctx, meta)
	if err != nil {
		return false, fmt.Errorf("reading the GC lease back: %w", err)
	}
	return l.Holder == c.o.Holder, nil
}

// RunOnce collects once if this replica gets the lease: ran is false when
// another replica holds it. A store without records (a registry) has no
// lease: every replica collects, which is safe (see docs/SERVE.md).
func (c *Collector) RunOnce(ctx context.Context) (res *gc.Result, ran bool, err error) {
	defer func() { c.o.Metrics.observeGC(res, ran, err) }()
	now := c.o.Now()
	if meta, ok := store.As[store.MetaStore](c.st); ok {
		held, err := c.takeLease(ctx, meta, now)
		if err != nil || !held {
			return nil, false, err
		}
	}
	res, err = gc.Prune(ctx, c.st, c.policy(), gc.Options{Now: c.o.Now, Logf: c.o.Logf, ByUse: true, Internal: c.o.Internal})
	if err != nil {
		return res, true, err
	}
	c.mu.Lock()
	f := c.observer
	c.mu.Unlock()
	if f != nil && res != nil {
		f(ctx, now, res.Kept)
	}
	c.o.Logf("gc: evicted %d entries, removed %d blobs (%d bytes), %d entries kept", len(res.Removed), len(res.Blobs.Deleted), res.Blobs.DeletedBytes, len(res.Kept))
	return res, true, nil
}

// Run collects every Interval (the first time at once) until ctx is done.
func (c *Collector) Run(ctx context.Context) {
	t := time.NewTicker(c.o.Interval)
	defer t.Stop()
	for {
		if _, _, err := c.RunOnce(ctx); err != nil && ctx.Err() == nil {
			c.o.Logf("warning: gc: %v (next try in %s)", err, c.o.Interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
