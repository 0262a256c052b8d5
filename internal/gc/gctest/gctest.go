// Package gctest checks cache prune end to end on a store: entries saved
// through the engine, pruned by age, count and size, compared with an
// independent computation of what must survive; the survivors restored;
// the grace period's two phases; and a save running across a prune. Every
// backend's tests call Run against its real server.
package gctest

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// entries is how many entries each test saves.
const entries = 5

// fixture is a store holding entries go-1..go-5, created an hour apart
// ending ten hours ago, each the previous one plus a new file (so they
// share packs), with the tree each holds.
type fixture struct {
	st    store.Store
	base  time.Time // go-1's created
	trees map[string]map[string]testtree.Entry
	src   string
}

func newFixture(t *testing.T, st store.Store) *fixture {
	f := &fixture{st: st, base: time.Now().Add(-10*time.Hour - entries*time.Hour).UTC(), trees: map[string]map[string]testtree.Entry{}}
	f.src = filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(f.src, 0o755); err != nil {
		t.Fatal(err)
	}
	testtree.Make(t, f.src)
	for i := 1; i <= entries; i++ {
		f.save(t, fmt.Sprintf("go-%d", i), f.base.Add(time.Duration(i-1)*time.Hour))
	}
	return f
}

// save adds a new file to the tree and saves it under key, created at when.
func (f *fixture) save(t *testing.T, key string, when time.Time) {
	t.Helper()
	f.saveTo(t, f.st, key, when)
}

func (f *fixture) saveTo(t *testing.T, st store.Store, key string, when time.Time) {
	t.Helper()
	data := make([]byte, 300_000)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(f.src, key+".bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Save(context.Background(), st, engine.SaveOptions{Key: key, Folders: []string{f.src}, PackSize: 256 << 10, Now: func() time.Time { return when }}); err != nil {
		t.Fatalf("Save %s: %v", key, err)
	}
	f.trees[key] = testtree.Snapshot(t, f.src, archive.StateFileName)
}

// refs reads every ref of the store.
func (f *fixture) refs(t *testing.T) map[string]*store.Ref {
	t.Helper()
	keys, err := f.st.ListRefs(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*store.Ref{}
	for _, k := range keys {
		r, err := f.st.GetRef(t.Context(), k)
		if err != nil {
			t.Fatalf("GetRef %s: %v", k, err)
		}
		m[k] = r
	}
	return m
}

// blobs lists the store's blobs, or nil when it cannot.
func (f *fixture) blobs(t *testing.T) []digest.Digest {
	t.Helper()
	l, ok := store.As[store.BlobLister](f.st)
	if !ok {
		return nil
	}
	bs, err := l.ListBlobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var ds []digest.Digest
	for _, b := range bs {
		ds = append(ds, b.Digest)
	}
	slices.Sort(ds)
	return ds
}

// storedBytes sums the sizes of the store's blobs as its listing gives them.
func (f *fixture) storedBytes(t *testing.T) int64 {
	t.Helper()
	l, _ := store.As[store.BlobLister](f.st)
	bs, err := l.ListBlobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return gc.Bytes(bs)
}

// named is the sorted set of blobs the refs name.
func named(refs map[string]*store.Ref) []digest.Digest {
	set := map[digest.Digest]bool{}
	for _, r := range refs {
		set[r.Index.Digest] = true
		for _, p := range r.Packs {
			set[p.Digest] = true
		}
	}
	var ds []digest.Digest
	for d := range set {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return ds
}

// expect is the oracle: the keys a policy keeps, computed from the refs
// directly (newest first by created; the size rule by trying every count
// of newest entries and keeping the largest that fits).
func expect(refs map[string]*store.Ref, p gc.Policy, now time.Time) []string {
	var all []*store.Ref
	for _, r := range refs {
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Created.After(all[j].Created) })
	var kept []*store.Ref
	for _, r := range all {
		if p.OlderThan > 0 && now.Sub(r.Created) > p.OlderThan {
			continue
		}
		if p.Keep > 0 && len(kept) == p.Keep {
			continue
		}
		kept = append(kept, r)
	}
	if p.MaxSize > 0 {
		for n := len(kept); n >= 0; n-- {
			sizes := map[digest.Digest]int64{}
			for _, r := range kept[:n] {
				sizes[r.Index.Digest] = r.Index.Size
				for _, pk := range r.Packs {
					sizes[pk.Digest] = pk.Size
				}
			}
			var total int64
			for _, s := range sizes {
				total += s
			}
			if total <= p.MaxSize {
				kept = kept[:n]
				break
			}
		}
	}
	var keys []string
	for _, r := range kept {
		keys = append(keys, r.Key)
	}
	slices.Sort(keys)
	return keys
}

func sortedKeys(m map[string]*store.Ref) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// check compares the store with the oracle and restores every survivor.
func (f *fixture) check(t *testing.T, want []string, swept bool) {
	t.Helper()
	refs := f.refs(t)
	if got := sortedKeys(refs); !slices.Equal(got, want) {
		t.Fatalf("entries left: %v, want %v", got, want)
	}
	if swept {
		if got, want := f.blobs(t), named(refs); !slices.Equal(got, want) {
			t.Fatalf("blobs left: %d, want exactly the %d the survivors name", len(got), len(want))
		}
		// What list reports (the refs' sizes, shared blobs once) is what
		// the store holds.
		var survivors []*store.Ref
		for _, r := range refs {
			survivors = append(survivors, r)
		}
		if got, want := f.storedBytes(t), gc.UniqueBytes(survivors); got != want {
			t.Fatalf("the store holds %d bytes of blobs, the entries say %d", got, want)
		}
	}
	for _, k := range want {
		dst := filepath.Join(t.TempDir(), "restored")
		r, err := engine.Restore(t.Context(), f.st, engine.RestoreOptions{Key: k, Folders: []string{dst}})
		if err != nil || !r.Fetched {
			t.Fatalf("restoring survivor %s: %+v, %v", k, r, err)
		}
		testtree.Equal(t, f.trees[k], testtree.Snapshot(t, dst, archive.StateFileName))
	}
}

// Run runs the prune tests on the stores newStore returns (each empty).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	// A minute on: every blob was written before it (a grace of 0 deletes them).
	now := func(*fixture) time.Time { return time.Now().Add(time.Minute) }
	policies := []struct {
		name string
		p    func(f *fixture) gc.Policy
	}{
		{"OlderThan", func(*fixture) gc.Policy { return gc.Policy{OlderThan: 12*time.Hour + 30*time.Minute} }},
		{"Keep", func(*fixture) gc.Policy { return gc.Policy{Keep: 2} }},
		{"MaxSize", func(f *fixture) gc.Policy {
			// Just over what the three newest take: the oldest two go.
			refs := f.refs(t)
			var newest []*store.Ref
			for i := entries; i > entries-3; i-- {
				newest = append(newest, refs[fmt.Sprintf("go-%d", i)])
			}
			return gc.Policy{MaxSize: gc.UniqueBytes(newest) + 1}
		}},
		{"Combined", func(*fixture) gc.Policy { return gc.Policy{OlderThan: 14*time.Hour + 30*time.Minute, Keep: 3} }},
		{"Prefix", func(*fixture) gc.Policy { return gc.Policy{Prefix: "go-1", Keep: 1} }},
	}
	for _, pc := range policies {
		t.Run(pc.name, func(t *testing.T) {
			f := newFixture(t, newStore(t))
			p := pc.p(f)
			at := now(f)
			var want []string
			if p.Prefix != "" {
				// Out of scope entries stay; in scope the policy applies.
				in := map[string]*store.Ref{}
				for k, r := range f.refs(t) {
					if len(k) >= len(p.Prefix) && k[:len(p.Prefix)] == p.Prefix {
						in[k] = r
					} else {
						want = append(want, k)
					}
				}
				want = append(want, expect(in, p, at)...)
				slices.Sort(want)
			} else {
				want = expect(f.refs(t), p, at)
			}
			dry, err := gc.Prune(t.Context(), f.st, p, gc.Options{DryRun: true, Now: func() time.Time { return at }})
			if err != nil {
				t.Fatalf("dry run: %v", err)
			}
			if got := len(f.refs(t)); got != entries {
				t.Fatalf("a dry run left %d entries of %d", got, entries)
			}
			res, err := gc.Prune(t.Context(), f.st, p, gc.Options{Now: func() time.Time { return at }, Logf: t.Logf})
			if err != nil {
				t.Fatalf("Prune: %v", err)
			}
			if len(res.Removed) != len(dry.Removed) || len(res.Blobs.Deleted) != len(dry.Blobs.Deleted) {
				t.Errorf("the dry run planned %d entries and %d blobs, the prune removed %d and %d", len(dry.Removed), len(dry.Blobs.Deleted), len(res.Removed), len(res.Blobs.Deleted))
			}
			f.check(t, want, res.Blobs.Swept)
		})
	}
	t.Run("ByUse", func(t *testing.T) { testByUse(t, newFixture(t, newStore(t))) })
	t.Run("GraceTwoPhases", func(t *testing.T) { testGrace(t, newFixture(t, newStore(t))) })
	t.Run("ConcurrentSave", func(t *testing.T) { testConcurrentSave(t, newFixture(t, newStore(t))) })
}

// testByUse: a prune by last use keeps the oldest entry, restored an
// hour ago according to its record, where the store keeps records; where
// it cannot (a registry), entries age by creation.
func testByUse(t *testing.T, f *fixture) {
	at := time.Now().Add(time.Minute)
	p := gc.Policy{OlderThan: 12*time.Hour + 30*time.Minute}
	want := []string{"go-4", "go-5"}
	if meta, ok := store.As[store.MetaStore](f.st); ok {
		if err := gc.RecordUse(t.Context(), meta, "go-1", at.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		want = []string{"go-1", "go-4", "go-5"}
	}
	res, err := gc.Prune(t.Context(), f.st, p, gc.Options{Now: func() time.Time { return at }, ByUse: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t, want, res.Blobs.Swept)
}

// testGrace: with a grace period, a prune only records the blobs it finds
// unnamed; the next one, a grace period later, removes them.
func testGrace(t *testing.T, f *fixture) {
	p := gc.Policy{Keep: 1, Grace: time.Hour}
	at := time.Now().Add(2 * time.Hour) // every blob was written long enough ago
	first, err := gc.Prune(t.Context(), f.st, p, gc.Options{Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	if !first.Blobs.Swept {
		f.check(t, []string{"go-5"}, false)
		return
	}
	if len(first.Blobs.Deleted) != 0 || first.Blobs.Waiting == 0 {
		t.Fatalf("first prune deleted %d blobs, %d waiting; want none deleted, some waiting", len(first.Blobs.Deleted), first.Blobs.Waiting)
	}
	if got := len(f.blobs(t)); got == len(named(f.refs(t))) {
		t.Fatal("the first prune left no unnamed blob: the test proves nothing")
	}
	half := at.Add(30 * time.Minute)
	if mid, err := gc.Prune(t.Context(), f.st, p, gc.Options{Now: func() time.Time { return half }}); err != nil || len(mid.Blobs.Deleted) != 0 {
		t.Fatalf("a prune half a grace period later deleted %d blobs (%v)", len(mid.Blobs.Deleted), err)
	}
	later := at.Add(time.Hour + time.Minute)
	second, err := gc.Prune(t.Context(), f.st, p, gc.Options{Now: func() time.Time { return later }})
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Blobs.Deleted) == 0 {
		t.Fatal("the prune a grace period later deleted nothing")
	}
	f.check(t, []string{"go-5"}, true)
}

// gate holds PutRef of one key until released: a save publishing while a
// prune runs.
type gate struct {
	store.Store
	key      string
	arrived  chan struct{}
	release  chan struct{}
	onceLock sync.Once
}

func (g *gate) Unwrap() store.Store { return g.Store }

func (g *gate) PutRef(ctx context.Context, r *store.Ref) error {
	if r.Key == g.key {
		g.onceLock.Do(func() { close(g.arrived) })
		<-g.release
	}
	return g.Store.PutRef(ctx, r)
}

// testConcurrentSave: a save that built on go-5 publishes after a prune
// removed go-5 (and everything else): its entry still restores, then and
// after the next prune.
func testConcurrentSave(t *testing.T, f *fixture) {
	g := &gate{Store: f.st, key: "late", arrived: make(chan struct{}), release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.saveTo(t, g, "late", time.Now().UTC())
	}()
	<-g.arrived
	at := time.Now().Add(2 * time.Hour)
	p := gc.Policy{OlderThan: time.Hour, Grace: gc.DefaultGrace}
	if _, err := gc.Prune(t.Context(), f.st, p, gc.Options{Now: func() time.Time { return at }}); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	<-done
	if t.Failed() {
		return
	}
	f.check(t, []string{"late"}, false)
	// A grace period on, the blobs only go-1..go-5 named go, late's stay.
	at = at.Add(gc.DefaultGrace + time.Minute)
	if _, err := gc.Prune(t.Context(), f.st, gc.Policy{Keep: 1, Grace: gc.DefaultGrace}, gc.Options{Now: func() time.Time { return at }}); err != nil {
		t.Fatal(err)
	}
	_, swept := store.As[store.BlobLister](f.st)
	f.check(t, []string{"late"}, swept)
}
