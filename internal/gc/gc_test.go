package gc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func blob(n int) format.Descriptor {
	return format.Descriptor{Digest: digest.FromBytes([]byte(fmt.Sprint("blob-", n))), Size: int64(1000 + n)}
}

// randomRefs makes n refs sharing packs from a small pool, created at
// random hours.
func randomRefs(r *rand.Rand, n int) []*store.Ref {
	var refs []*store.Ref
	for i := range n {
		ref := &store.Ref{Format: format.Version, Key: fmt.Sprintf("k-%02d", i), Index: blob(1000 + i), Created: t0.Add(time.Duration(r.IntN(100)) * time.Hour)}
		for range 1 + r.IntN(4) {
			ref.Packs = append(ref.Packs, blob(r.IntN(12)))
		}
		refs = append(refs, ref)
	}
	return refs
}

// randomUses says that some of refs were restored, at random hours, some
// before they were created (a record left by an earlier entry of the key).
func randomUses(r *rand.Rand, refs []*store.Ref) map[string]time.Time {
	m := map[string]time.Time{}
	for _, ref := range refs {
		if r.IntN(2) == 0 {
			m[ref.Key] = t0.Add(time.Duration(r.IntN(100)) * time.Hour)
		}
	}
	return m
}

// oracle keeps, from refs sorted most recently used first (the later of
// created and p.LastUsed; then created, then key), what p keeps: by brute
// force for the size rule (the largest count of most recently used entries
// whose blobs fit).
func oracle(refs []*store.Ref, p gc.Policy, now time.Time) []string {
	used := func(r *store.Ref) time.Time {
		if u, ok := p.LastUsed[r.Key]; ok && u.After(r.Created) {
			return u
		}
		return r.Created
	}
	sorted := slices.Clone(refs)
	slices.SortFunc(sorted, func(a, b *store.Ref) int {
		if c := used(b).Compare(used(a)); c != 0 {
			return c
		}
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(b.Key, a.Key)
	})
	var kept []*store.Ref
	for _, r := range sorted {
		if !strings.HasPrefix(r.Key, p.Prefix) || p.OlderThan > 0 && now.Sub(used(r)) > p.OlderThan || p.Keep > 0 && len(kept) == p.Keep {
			continue
		}
		kept = append(kept, r)
	}
	for n := len(kept); p.MaxSize > 0 && n >= 0; n-- {
		if gc.UniqueBytes(kept[:n]) <= p.MaxSize {
			kept = kept[:n]
			break
		}
	}
	var keys []string
	for _, r := range kept {
		keys = append(keys, r.Key)
	}
	return keys
}

func TestSelectEntriesMatchesOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		refs := randomRefs(r, 1+r.IntN(15))
		p := gc.Policy{}
		if r.IntN(2) == 0 {
			p.OlderThan = time.Duration(1+r.IntN(100)) * time.Hour
		}
		if r.IntN(2) == 0 {
			p.Keep = 1 + r.IntN(10)
		}
		if r.IntN(2) == 0 {
			p.MaxSize = int64(r.IntN(20000))
		}
		if r.IntN(4) == 0 {
			p.Prefix = "k-0"
		}
		if r.IntN(2) == 0 {
			p.LastUsed = randomUses(r, refs)
		}
		now := t0.Add(100 * time.Hour)
		keep, drop := gc.SelectEntries(refs, p, now)
		var got []string
		for _, k := range keep {
			got = append(got, k.Key)
		}
		want := oracle(refs, p, now)
		if !slices.Equal(got, want) {
			t.Fatalf("case %d, policy %+v: kept %v, want %v", i, p, got, want)
		}
		inScope := 0
		for _, ref := range refs {
			if strings.HasPrefix(ref.Key, p.Prefix) {
				inScope++
			}
		}
		if len(keep)+len(drop) != inScope {
			t.Fatalf("case %d: %d kept + %d dropped, %d in scope", i, len(keep), len(drop), inScope)
		}
	}
}

func TestSelectBlobs(t *testing.T) {
	now := t0.Add(10 * time.Hour)
	old, young := now.Add(-2*time.Hour), now.Add(-10*time.Minute)
	d := func(n int) digest.Digest { return blob(n).Digest }
	blobs := []store.BlobMeta{
		{Digest: d(1), BlobInfo: store.BlobInfo{Size: 1, Modified: old}},   // live
		{Digest: d(2), BlobInfo: store.BlobInfo{Size: 2, Modified: old}},   // unnamed long enough: deleted
		{Digest: d(3), BlobInfo: store.BlobInfo{Size: 3, Modified: old}},   // unnamed, first seen now: waits
		{Digest: d(4), BlobInfo: store.BlobInfo{Size: 4, Modified: young}}, // being uploaded: young
		{Digest: d(5), BlobInfo: store.BlobInfo{Size: 5}},                  // no time: young
		{Digest: d(6), BlobInfo: store.BlobInfo{Size: 6, Modified: old}},   // seen unnamed recently: waits
		{Digest: d(7), BlobInfo: store.BlobInfo{Size: 7, Modified: old}},   // forged future sighting: waits
	}
	live := map[digest.Digest]bool{d(1): true}
	pending := map[digest.Digest]time.Time{d(1): old, d(2): now.Add(-time.Hour), d(4): old, d(6): now.Add(-30 * time.Minute), d(7): now.Add(100 * time.Hour)}
	sw := gc.SelectBlobs(blobs, live, pending, time.Hour, now)
	if len(sw.Delete) != 1 || sw.Delete[0].Digest != d(2) {
		t.Fatalf("deleted %v, want blob 2 alone", sw.Delete)
	}
	if sw.Live != 1 || sw.Young != 2 || sw.Waiting != 3 {
		t.Fatalf("live %d young %d waiting %d, want 1 2 3", sw.Live, sw.Young, sw.Waiting)
	}
	want := map[digest.Digest]time.Time{d(3): now, d(4): old, d(5): now, d(6): now.Add(-30 * time.Minute), d(7): now}
	if len(sw.Pending) != len(want) {
		t.Fatalf("pending %v, want %v", sw.Pending, want)
	}
	for k, v := range want {
		if !sw.Pending[k].Equal(v) {
			t.Errorf("pending %s = %v, want %v", k.Short(), sw.Pending[k], v)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, p := range []gc.Policy{{}, {Keep: -1}, {OlderThan: -1}, {MaxSize: -1}, {Keep: 1, Grace: -1}, {Keep: 1, Prefix: "../x"}} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v was accepted", p)
		}
	}
	if err := (gc.Policy{Keep: 1}).Validate(); err != nil {
		t.Error(err)
	}
}

// publisher publishes a ref naming the first blob the prune deletes, as a
// save that read the refs before the prune would: the prune must withdraw it.
type publisher struct {
	store.Store
	once sync.Once
	key  string
}

func (p *publisher) Unwrap() store.Store { return p.Store }

func (p *publisher) DeleteRef(ctx context.Context, key string) error {
	del, _ := store.As[store.Deleter](p.Store)
	return del.DeleteRef(ctx, key)
}

func (p *publisher) DeleteBlob(ctx context.Context, d digest.Digest) error {
	p.once.Do(func() {
		ref := &store.Ref{Format: format.Version, Key: p.key, Index: format.Descriptor{Digest: d, Size: 1}, Created: t0}
		if err := p.Store.PutRef(ctx, ref); err != nil {
			panic(err)
		}
	})
	del, _ := store.As[store.Deleter](p.Store)
	return del.DeleteBlob(ctx, d)
}

func TestPruneWithdrawsWhatNamesADeletedBlob(t *testing.T) {
	ctx := t.Context()
	mem := memory.NewStore(t.Name())
	for i := range 3 {
		b := []byte(fmt.Sprint("index ", i))
		dg := digest.FromBytes(b)
		if err := mem.PutBlob(ctx, dg, int64(len(b)), strings.NewReader(string(b))); err != nil {
			t.Fatal(err)
		}
		ref := &store.Ref{Format: format.Version, Key: fmt.Sprintf("go-%d", i), Index: format.Descriptor{Digest: dg, Size: int64(len(b))}, Created: time.Now().Add(time.Duration(-i) * time.Hour)}
		if err := mem.PutRef(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	st := &publisher{Store: mem, key: "late"}
	res, err := gc.Prune(ctx, st, gc.Policy{Keep: 1}, gc.Options{Now: func() time.Time { return time.Now().Add(time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Blobs.Withdrawn, []string{"late"}) {
		t.Fatalf("withdrawn %v, want [late]", res.Blobs.Withdrawn)
	}
	keys, _ := mem.ListRefs(ctx, "")
	if !slices.Equal(keys, []string{"go-0"}) {
		t.Fatalf("refs left %v, want [go-0]", keys)
	}
}

func TestPruneSkipsAndRemovesDamagedRefs(t *testing.T) {
	ctx := t.Context()
	b := memory.New(t.Name())
	mem := store.NewObjectStore(b)
	if err := b.Put(ctx, store.RefName("go-bad"), 5, strings.NewReader("{nope")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, store.RefName("other-bad"), 5, strings.NewReader("{nope")); err != nil {
		t.Fatal(err)
	}
	res, err := gc.Prune(ctx, mem, gc.Policy{Prefix: "go-", Keep: 5}, gc.Options{})
	if err != nil {
		t.Fatalf("a damaged ref stopped the prune: %v", err)
	}
	if len(res.Removed) != 1 || res.Removed[0].Key != "go-bad" || res.Removed[0].Rule != gc.RuleDamaged {
		t.Fatalf("removed %+v, want go-bad as damaged", res.Removed)
	}
	keys, _ := mem.ListRefs(ctx, "")
	if !slices.Equal(keys, []string{"other-bad"}) {
		t.Fatalf("refs left %v, want the out-of-scope one", keys)
	}
}

// TestReadUsesDistrustsRecords: a record of another key, of garbage or of
// the future does not count as it says.
func TestReadUsesDistrustsRecords(t *testing.T) {
	ctx := t.Context()
	mem := memory.NewStore(t.Name())
	now := t0.Add(50 * time.Hour)
	refs := []*store.Ref{{Key: "a"}, {Key: "b"}, {Key: "c"}, {Key: "d"}, {Key: "e"}}
	if err := gc.RecordUse(ctx, mem, "a", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := gc.RecordUse(ctx, mem, "b", now.Add(1000*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// c's record name holds a's record: copied, not c's.
	data, _ := mem.GetMeta(ctx, gc.UsedRecord("a"))
	if err := mem.PutMeta(ctx, gc.UsedRecord("c"), data); err != nil {
		t.Fatal(err)
	}
	if err := mem.PutMeta(ctx, gc.UsedRecord("d"), []byte("{nope")); err != nil {
		t.Fatal(err)
	}
	got, err := gc.ReadUses(ctx, mem, refs, now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Time{"a": t0.Add(time.Hour), "b": now}
	if len(got) != len(want) || !got["a"].Equal(want["a"]) || !got["b"].Equal(want["b"]) {
		t.Fatalf("uses %v, want %v", got, want)
	}
}
