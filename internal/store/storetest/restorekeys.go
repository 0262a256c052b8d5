package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/store"
)

// KeyCost is what resolving a restore key cost: the store calls made
// (listings and ref reads) and, when counted, the HTTP requests.
type KeyCost struct {
	Lists, Reads, Requests int
}

func (c KeyCost) String() string {
	s := fmt.Sprintf("%d listing + %d ref reads", c.Lists, c.Reads)
	if c.Requests > 0 {
		s += fmt.Sprintf(" (%d HTTP requests)", c.Requests)
	}
	return s
}

// MaxLazyReads bounds the refs store.Newest reads when the store's listing
// gives save times, whatever the number of entries.
const MaxLazyReads = 16

// RestoreKeyCost puts n entries under the prefix "rk-" of s (parallel
// saves at a time, keys growing with time), then resolves the prefix twice: reading
// every candidate (store.NewestFirst, what a restore key cost before
// store.RefLister) and lazily (store.Newest). requests, when not nil,
// counts the HTTP requests the store made so far (a faultproxy.Proxy in
// front of its server). It fails t when the two disagree on the newest.
func RestoreKeyCost(t testing.TB, s store.Store, n, parallel int, requests func() int) (all, lazy KeyCost) {
	t.Helper()
	ctx := context.Background()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i := range n {
		g.Go(func() error {
			return s.PutRef(gctx, NewRef(t, s, fmt.Sprintf("rk-%05d", i), time.Now(), 0))
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	measure := func(resolve func(st store.Store) (*store.Ref, error)) (*store.Ref, KeyCost) {
		c := &countingRefs{Store: s}
		before := 0
		if requests != nil {
			before = requests()
		}
		r, err := resolve(c)
		if err != nil {
			t.Fatal(err)
		}
		cost := KeyCost{Lists: int(c.lists.Load()), Reads: int(c.reads.Load())}
		if requests != nil {
			cost.Requests = requests() - before
		}
		return r, cost
	}
	first, all := measure(func(st store.Store) (*store.Ref, error) {
		refs, err := store.NewestFirst(ctx, st, "rk-")
		if err != nil {
			return nil, err
		}
		return refs[0], nil
	})
	newest, lazy := measure(func(st store.Store) (*store.Ref, error) { return store.Newest(ctx, st, "rk-") })
	if newest.Key != first.Key {
		// Saves in parallel: one of the last few saved is what the listing
		// can tell apart (docs/ARCHITECTURE.md, "Store interface").
		t.Logf("Newest = %s (created %s), NewestFirst = %s (created %s)", newest.Key, newest.Created, first.Key, first.Created)
		if first.Created.Sub(newest.Created) > 2*time.Second {
			t.Errorf("Newest gave %s, %s older than the newest %s", newest.Key, first.Created.Sub(newest.Created), first.Key)
		}
	}
	return all, lazy
}
