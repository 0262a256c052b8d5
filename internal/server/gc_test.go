package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// newClock is a fake clock at about now, moved by the test.
func newClock() *testserver.Clock { return testserver.NewClock(time.Now().Truncate(time.Second)) }

// countingMeta counts the records read and written through it.
type countingMeta struct {
	store.Store
	gets, puts atomic.Int64
}

func (c *countingMeta) Unwrap() store.Store { return c.Store }

func (c *countingMeta) GetMeta(ctx context.Context, name string) ([]byte, error) {
	c.gets.Add(1)
	m, _ := store.As[store.MetaStore](c.Store)
	return m.GetMeta(ctx, name)
}

func (c *countingMeta) PutMeta(ctx context.Context, name string, data []byte) error {
	c.puts.Add(1)
	m, _ := store.As[store.MetaStore](c.Store)
	return m.PutMeta(ctx, name, data)
}

// replica is one cache-serve over st: a server with anonymous reads in
// scope "default" and its collector.
type replica struct {
	t   *testing.T
	srv *server.Server
	gc  *server.Collector
}

func newReplica(t *testing.T, st store.Store, clk *testserver.Clock, holder string, o server.CollectorOptions) *replica {
	t.Helper()
	srv, err := server.New(st, server.Options{AllowUnauthenticatedReads: true, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	o.Now, o.Holder, o.Metrics = clk.Now, holder, srv.Metrics()
	if o.Interval == 0 {
		o.Interval = time.Hour
	}
	c, err := server.NewCollector(st, o)
	if err != nil {
		t.Fatal(err)
	}
	return &replica{t: t, srv: srv, gc: c}
}

// restore reads the ref of key, as a fetch does (the handler returns once
// its last-use record is written).
func (r *replica) restore(key string) {
	r.t.Helper()
	rec := httptest.NewRecorder()
	r.srv.ServeHTTP(rec, httptest.NewRequest("GET", httpapi.RefsPath+key, nil))
	if rec.Code != http.StatusOK {
		r.t.Fatalf("GET %s: %d %s", key, rec.Code, rec.Body)
	}
}

// metrics are the replica's /metrics.
func (r *replica) metrics() testserver.Metrics {
	r.t.Helper()
	rec := httptest.NewRecorder()
	r.srv.ServeHTTP(rec, httptest.NewRequest("GET", server.MetricsPath, nil))
	if rec.Code != http.StatusOK {
		r.t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	return testserver.ParseMetrics(r.t, rec.Body.String())
}

func (r *replica) run() (*gc.Result, bool) {
	r.t.Helper()
	res, ran, err := r.gc.RunOnce(r.t.Context())
	if err != nil {
		r.t.Fatal(err)
	}
	return res, ran
}

func removedKeys(res *gc.Result) []string {
	var keys []string
	for _, d := range res.Removed {
		keys = append(keys, d.Key)
	}
	sort.Strings(keys)
	return keys
}

func refKeys(t *testing.T, st store.Store) []string {
	t.Helper()
	keys, err := st.ListRefs(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

func putRef(t *testing.T, st store.Store, key string, created time.Time) {
	t.Helper()
	if err := st.PutRef(t.Context(), storetest.NewRef(t, st, key, created, 1)); err != nil {
		t.Fatal(err)
	}
}

// TestRecordUseAtMostHourly: restores of a ref write its last-use record
// once an hour at most, and in the store, where another replica's GC reads it.
func TestRecordUseAtMostHourly(t *testing.T) {
	clk := newClock()
	st := &countingMeta{Store: memory.NewStore(t.Name())}
	putRef(t, st, "default.go-1", clk.Now().Add(-48*time.Hour))
	r := newReplica(t, st, clk, "a", server.CollectorOptions{TTL: 24 * time.Hour})
	for range 3 {
		r.restore("go-1")
	}
	clk.Set(clk.Now().Add(59 * time.Minute))
	r.restore("go-1")
	if n := st.puts.Load(); n != 1 {
		t.Fatalf("%d records written in an hour, want 1", n)
	}
	clk.Set(clk.Now().Add(2 * time.Minute))
	r.restore("go-1")
	if n := st.puts.Load(); n != 2 {
		t.Fatalf("%d records written after an hour, want 2", n)
	}
	uses, err := gc.ReadUses(t.Context(), st, []*store.Ref{{Key: "default.go-1"}}, clk.Now())
	if err != nil || !uses["default.go-1"].Equal(clk.Now()) {
		t.Fatalf("recorded %v (%v), want %v", uses, err, clk.Now())
	}
}

// TestEvictByTTLSinceLastUse: an entry older than the TTL that was
// restored within it survives; one that was not goes.
func TestEvictByTTLSinceLastUse(t *testing.T) {
	clk := newClock()
	start := clk.Now()
	st := memory.NewStore(t.Name())
	putRef(t, st, "default.old", start.Add(-10*24*time.Hour))
	putRef(t, st, "default.used", start.Add(-10*24*time.Hour))
	putRef(t, st, "main.new", start.Add(-24*time.Hour))
	r := newReplica(t, st, clk, "a", server.CollectorOptions{TTL: 7 * 24 * time.Hour, Grace: time.Hour})
	clk.Set(start.Add(-2 * 24 * time.Hour))
	r.restore("used")
	clk.Set(start)
	res, ran := r.run()
	if !ran {
		t.Fatal("the only replica did not get the lease")
	}
	if got := removedKeys(res); !slices.Equal(got, []string{"default.old"}) {
		t.Fatalf("evicted %v, want [default.old]", got)
	}
	if got := refKeys(t, st); !slices.Equal(got, []string{"default.used", "main.new"}) {
		t.Fatalf("refs left %v", got)
	}
}

// sharedRef puts a ref naming its own index of 1000 bytes and a pack of
// 3000 bytes that every such ref shares.
func sharedRef(t *testing.T, st store.Store, key string, created time.Time, shared format.Descriptor) {
	t.Helper()
	idx := bytes.Repeat([]byte(key), 1000)[:1000]
	ref := &store.Ref{Format: format.Version, Key: key, Index: storetest.PutBlob(t, st, idx), Packs: []format.Descriptor{shared}, Created: created}
	if err := st.PutRef(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
}

// TestEvictLRUUnderMaxSize: over --max-size, the least recently used
// entry goes first (not the oldest), and a pack three entries share counts
// once: 3000 shared + 3 x 1000 own = 6000 bytes, so with 5000 allowed one
// entry goes, not all.
func TestEvictLRUUnderMaxSize(t *testing.T) {
	clk := newClock()
	start := clk.Now()
	st := memory.NewStore(t.Name())
	shared := storetest.PutBlob(t, st, bytes.Repeat([]byte("s"), 3000))
	sharedRef(t, st, "default.a", start.Add(-3*time.Hour), shared)
	sharedRef(t, st, "default.b", start.Add(-2*time.Hour), shared)
	sharedRef(t, st, "default.c", start.Add(-1*time.Hour), shared)
	r := newReplica(t, st, clk, "a", server.CollectorOptions{MaxSize: 5000, Grace: time.Hour})
	clk.Set(start.Add(-30 * time.Minute))
	r.restore("a")
	clk.Set(start)
	res, _ := r.run()
	if got := removedKeys(res); !slices.Equal(got, []string{"default.b"}) {
		t.Fatalf("evicted %v, want [default.b] (the least recently used)", got)
	}
	if n := gc.UniqueBytes(res.Kept); n != 5000 {
		t.Fatalf("kept %d bytes, want 5000", n)
	}
}

// TestGCGraceKeepsBlobsBeingSaved: a blob uploaded but not yet named by a
// ref survives the GC runs of the grace period, and then lives on once its
// ref is published; an unnamed blob goes after the grace period.
func TestGCGraceKeepsBlobsBeingSaved(t *testing.T) {
	clk := newClock()
	start := clk.Now()
	st := memory.NewStore(t.Name())
	putRef(t, st, "default.old", start.Add(-30*24*time.Hour))
	pending := storetest.PutBlob(t, st, []byte("a pack of a save in progress"))
	orphan := storetest.PutBlob(t, st, []byte("a pack no save will name"))
	r := newReplica(t, st, clk, "a", server.CollectorOptions{TTL: 7 * 24 * time.Hour, Grace: time.Hour})
	has := func(d digest.Digest) bool {
		_, err := st.StatBlob(t.Context(), d)
		return err == nil
	}
	var entries, blobs, freed int
	count := func(res *gc.Result) {
		entries += len(res.Removed)
		blobs += len(res.Blobs.Deleted)
		freed += int(res.Blobs.DeletedBytes)
	}
	for _, at := range []time.Duration{0, 30 * time.Minute} {
		clk.Set(start.Add(at))
		res, _ := r.run()
		count(res)
		if !has(pending.Digest) || !has(orphan.Digest) {
			t.Fatalf("at +%s an unnamed blob was removed within the grace period", at)
		}
	}
	ref := &store.Ref{Format: format.Version, Key: "default.new", Index: pending, Created: start.Add(40 * time.Minute)}
	if err := st.PutRef(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	clk.Set(start.Add(2 * time.Hour))
	res, _ := r.run()
	count(res)
	if !has(pending.Digest) {
		t.Fatal("the blob of the published entry was removed")
	}
	if has(orphan.Digest) {
		t.Fatal("an unnamed blob outlived the grace period")
	}
	// The server's metrics count what its GC evicted.
	m := r.metrics()
	for series, want := range map[string]int{
		`tekton_cache_gc_runs_total{result="ok"}`: 3,
		"tekton_cache_gc_evicted_entries_total":   entries,
		"tekton_cache_gc_removed_blobs_total":     blobs,
		"tekton_cache_gc_removed_bytes_total":     freed,
	} {
		if got := m[series]; got != float64(want) {
			t.Errorf("%s = %v, want %d", series, got, want)
		}
	}
	if entries != 1 || blobs < 2 || freed == 0 {
		t.Fatalf("the GC evicted %d entries, %d blobs (%d bytes): want the old entry and its blobs, and the orphan", entries, blobs, freed)
	}
}

// TestTwoReplicasOneGC: two servers over one directory store both serve,
// and only one of them collects per lease period; the other takes over
// once the lease expires, and a forged lease far in the future holds it
// off for two periods at most.
func TestTwoReplicasOneGC(t *testing.T) {
	clk := newClock()
	start := clk.Now()
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewObjectStore(b)
	putRef(t, st, "default.go-1", start.Add(-time.Hour))
	o := server.CollectorOptions{TTL: 7 * 24 * time.Hour, Grace: time.Hour, Interval: time.Hour}
	a, bb := newReplica(t, st, clk, "a", o), newReplica(t, st, clk, "b", o)
	step := func(at time.Duration, wantA, wantB bool) {
		t.Helper()
		clk.Set(start.Add(at))
		_, ranA := a.run()
		_, ranB := bb.run()
		if ranA != wantA || ranB != wantB {
			t.Fatalf("at +%s: a ran %v, b ran %v; want %v, %v", at, ranA, ranB, wantA, wantB)
		}
		a.restore("go-1")
		bb.restore("go-1")
	}
	step(0, true, false)
	step(30*time.Minute, true, false) // a renews its own lease
	step(2*time.Hour, true, false)    // a's lease ran out, a took it first
	_, ranB := bb.run()
	if ranB {
		t.Fatal("b ran while a holds the lease")
	}
	clk.Set(start.Add(3*time.Hour + time.Minute))
	if _, ranB = bb.run(); !ranB {
		t.Fatal("b did not take over the expired lease")
	}
	forged := []byte(`{"format":1,"holder":"mallory","expires":"2999-01-01T00:00:00Z"}`)
	if err := st.PutMeta(t.Context(), server.LeaseRecord, forged); err != nil {
		t.Fatal(err)
	}
	step(4*time.Hour, true, false)
	// b skipped the runs while a held the lease, and ran once.
	if m := bb.metrics(); m[`tekton_cache_gc_runs_total{result="skipped"}`] != 5 || m[`tekton_cache_gc_runs_total{result="ok"}`] != 1 {
		t.Errorf("b's GC runs: %v skipped, %v ok; want 5 and 1", m[`tekton_cache_gc_runs_total{result="skipped"}`], m[`tekton_cache_gc_runs_total{result="ok"}`])
	}
}

// TestGCRecordCost: a GC run over N entries reads N last-use records,
// plus the lease twice and the pending record once, and writes the lease
// and the pending record: what each run costs beyond `cache prune`.
func TestGCRecordCost(t *testing.T) {
	clk := newClock()
	st := &countingMeta{Store: memory.NewStore(t.Name())}
	const n = 20
	for i := range n {
		putRef(t, st, fmt.Sprintf("default.go-%d", i), clk.Now().Add(-time.Hour))
	}
	r := newReplica(t, st, clk, "a", server.CollectorOptions{TTL: 24 * time.Hour, Grace: time.Hour})
	r.run()
	if g, p := st.gets.Load(), st.puts.Load(); g != n+3 || p != 2 {
		t.Fatalf("a GC run over %d entries read %d records and wrote %d, want %d and 2", n, g, p, n+3)
	}
}
