package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// capability is a test of an optional capability: it runs only on stores
// in which store.As finds it.
type capability struct {
	name  string
	has   func(t *testing.T, s store.Store) bool
	fn    func(t *testing.T, s store.Store, o Options)
	clean bool // puts nothing successfully: checked with Options.Leftovers
}

func hasDeleter(_ *testing.T, s store.Store) bool {
	_, ok := store.As[store.Deleter](s)
	return ok
}

func hasStager(t *testing.T, s store.Store) bool { return canStage(t, s) }

func hasLister(_ *testing.T, s store.Store) bool {
	_, ok := store.As[store.BlobLister](s)
	return ok
}

var capabilities = []capability{
	{"Deleter/DeleteRef", hasDeleter, testDeleteRef, false},
	{"Deleter/DeleteBlob", hasDeleter, testDeleteBlob, false},
	{"BlobStager/Commit", hasStager, testStagedCommit, false},
	{"BlobStager/Refused", hasStager, testStagedRefused, true},
	{"BlobLister/Empty", hasLister, testListBlobsEmpty, true},
	{"BlobLister/ListBlobs", hasLister, testListBlobs, false},
	{"RefLister/ListRefInfo", hasRefLister, testListRefInfo, false},
	{"RefLister/NewestReadsFew", hasRefLister, testNewestReadsFew, false},
	{"MetaStore/Records", hasMeta, testMeta, false},
}

func hasMeta(_ *testing.T, s store.Store) bool {
	_, ok := store.As[store.MetaStore](s)
	return ok
}

// testMeta: a record reads back as written, replaced whole; a missing one
// is ErrNotFound; a bad name is refused; records are neither refs nor blobs.
func testMeta(t *testing.T, s store.Store, _ Options) {
	ms, _ := store.As[store.MetaStore](s)
	ctx := context.Background()
	if _, err := ms.GetMeta(ctx, "gc-pending"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetMeta of a missing record: %v, want ErrNotFound", err)
	}
	for _, data := range [][]byte{[]byte(`{"first":"a longer record"}`), []byte(`{"b":2}`), {}} {
		if err := ms.PutMeta(ctx, "gc-pending", data); err != nil {
			t.Fatalf("PutMeta: %v", err)
		}
		got, err := ms.GetMeta(ctx, "gc-pending")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("GetMeta after PutMeta(%q) = %q, %v", data, got, err)
		}
	}
	for _, bad := range []string{"", "../refs/x", "a/b", ".hidden", "UPPER"} {
		if err := ms.PutMeta(ctx, bad, []byte("x")); err == nil {
			t.Errorf("PutMeta(%q) was accepted", bad)
		}
	}
	if keys, err := s.ListRefs(ctx, ""); err != nil || len(keys) != 0 {
		t.Errorf("ListRefs sees records: %q, %v", keys, err)
	}
	if l, ok := store.As[store.BlobLister](s); ok {
		if blobs, err := l.ListBlobs(ctx); err != nil || len(blobs) != 0 {
			t.Errorf("ListBlobs sees records: %v, %v", blobs, err)
		}
	}
}

func hasRefLister(_ *testing.T, s store.Store) bool {
	_, ok := store.As[store.RefLister](s)
	return ok
}

// runCapabilities runs each capability test whose capability the stores
// of newStore have, and logs the ones they lack.
func runCapabilities(t *testing.T, newStore func(t *testing.T) store.Store, o Options) {
	for _, c := range capabilities {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			if capability := strings.Split(c.name, "/")[0]; !c.has(t, s) {
				if !slices.Contains(o.Lacks, capability) {
					t.Fatalf("%s has no %s, and Options.Lacks does not say it lacks it", s, capability)
				}
				t.Skipf("%s has no %s", s, capability)
			} else if slices.Contains(o.Lacks, capability) {
				t.Fatalf("%s has %s, which Options.Lacks says it lacks", s, capability)
			}
			c.fn(t, s, o)
			if c.clean {
				checkLeftovers(t, o, s)
			}
		})
	}
}

// wantMissingOK checks the answer of a delete of something missing:
// store.Deleter says it is not an error.
func wantMissingOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s of something missing: %v, want nil (not an error, says store.Deleter)", what, err)
	}
}

func testDeleteRef(t *testing.T, s store.Store, _ Options) {
	del, _ := store.As[store.Deleter](s)
	now := time.Now().Truncate(time.Millisecond)
	gone, kept := NewRef(t, s, "deleted", now, 1), NewRef(t, s, "kept", now, 1)
	for _, r := range []*store.Ref{gone, kept} {
		if err := s.PutRef(ctx(t), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := del.DeleteRef(ctx(t), gone.Key); err != nil {
		t.Fatalf("DeleteRef: %v", err)
	}
	_, err := s.GetRef(ctx(t), gone.Key)
	wantNotFound(t, "GetRef of a deleted ref", err)
	keys, err := s.ListRefs(ctx(t), "")
	if err != nil || !slices.Equal(keys, []string{kept.Key}) {
		t.Fatalf("ListRefs after DeleteRef = %v, %v; want [%s]", keys, err, kept.Key)
	}
	got, err := s.GetRef(ctx(t), kept.Key)
	if err != nil {
		t.Fatalf("GetRef of the ref not deleted: %v", err)
	}
	sameRef(t, got, kept)
	// The blobs of a deleted ref stay: a prune deletes them, not DeleteRef.
	for _, d := range []digest.Digest{gone.Index.Digest, gone.Packs[0].Digest} {
		if _, err := s.StatBlob(ctx(t), d); err != nil {
			t.Fatalf("StatBlob of a blob of the deleted ref: %v", err)
		}
	}
	wantMissingOK(t, "DeleteRef", del.DeleteRef(ctx(t), gone.Key))
	wantMissingOK(t, "DeleteRef", del.DeleteRef(ctx(t), "never-put"))
	if err := del.DeleteRef(ctx(t), "../escape"); !errors.Is(err, store.ErrInvalidKey) {
		t.Fatalf("DeleteRef of an invalid key = %v, want ErrInvalidKey", err)
	}
}

func testDeleteBlob(t *testing.T, s store.Store, _ Options) {
	del, _ := store.As[store.Deleter](s)
	gone, kept := PutBlob(t, s, []byte("a blob to delete")), PutBlob(t, s, []byte("a blob to keep"))
	if err := del.DeleteBlob(ctx(t), gone.Digest); err != nil {
		t.Fatalf("DeleteBlob: %v", err)
	}
	wantGone(t, s, gone.Digest, "DeleteBlob")
	rc, err := s.GetBlob(ctx(t), gone.Digest)
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	wantNotFound(t, "GetBlob of a deleted blob", err)
	if got := readBlob(t, s, kept.Digest); string(got) != "a blob to keep" {
		t.Fatalf("the blob not deleted reads %q", got)
	}
	wantMissingOK(t, "DeleteBlob", del.DeleteBlob(ctx(t), gone.Digest))
	// A deleted blob can be put again.
	PutBlob(t, s, []byte("a blob to delete"))
	if got := readBlob(t, s, gone.Digest); string(got) != "a blob to delete" {
		t.Fatalf("a blob put again after DeleteBlob reads %q", got)
	}
}

// stage writes data to a new staged blob of s in pieces, checking its
// Digest and Size as it goes.
func stage(t *testing.T, s store.Store, data []byte) store.StagedBlob {
	t.Helper()
	sb, err := store.StageBlob(ctx(t), s)
	if err != nil {
		t.Fatalf("StageBlob: %v", err)
	}
	for i, piece := range [][]byte{data[:len(data)/3], data[len(data)/3:]} {
		if _, err := sb.Write(piece); err != nil {
			sb.Abort()
			t.Fatalf("writing a staged blob: %v", err)
		}
		written := data[:len(data)/3]
		if i == 1 {
			written = data
		}
		if sb.Size() != int64(len(written)) || sb.Digest() != digest.FromBytes(written) {
			sb.Abort()
			t.Fatalf("after %d bytes a staged blob says Size %d, Digest %s; want %d, %s",
				len(written), sb.Size(), sb.Digest().Short(), len(written), digest.FromBytes(written).Short())
		}
	}
	return sb
}

func testStagedCommit(t *testing.T, s store.Store, _ Options) {
	data, d := RandomBlob(t, 3<<20+7)
	if err := stage(t, s, data).Commit(ctx(t), d, int64(len(data))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	info, err := s.StatBlob(ctx(t), d)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("StatBlob of a committed staged blob = %+v, %v; want size %d", info, err, len(data))
	}
	rc, err := s.GetBlob(ctx(t), d)
	if err != nil {
		t.Fatalf("GetBlob of a committed staged blob: %v", err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(digest.NewVerifier(rc, d, int64(len(data)))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a committed staged blob reads back as %d bytes, %v", len(got), err)
	}
	// Staging a blob the store holds already succeeds.
	if err := stage(t, s, data).Commit(ctx(t), d, int64(len(data))); err != nil {
		t.Fatalf("Commit of a blob the store holds: %v", err)
	}
}

func testStagedRefused(t *testing.T, s store.Store, _ Options) {
	data, d := RandomBlob(t, 1<<20+3)
	_, other := RandomBlob(t, len(data))
	for _, tc := range []struct {
		what string
		d    digest.Digest
		size int64
	}{
		{"a wrong digest", other, int64(len(data))},
		{"a size too large", d, int64(len(data)) + 1},
		{"a size too small", d, int64(len(data)) - 1},
	} {
		err := stage(t, s, data).Commit(ctx(t), tc.d, tc.size)
		if !errors.Is(err, digest.ErrMismatch) {
			t.Fatalf("Commit with %s = %v, want digest.ErrMismatch", tc.what, err)
		}
		wantGone(t, s, d, "a Commit with "+tc.what)
		wantGone(t, s, other, "a Commit with "+tc.what)
	}
	stage(t, s, data).Abort()
	wantGone(t, s, d, "Abort")
}

// wantModified checks a blob's Modified: zero when the store cannot tell
// (o.NoModTime), else between from (less a second: stores keep whole
// seconds) and now.
func wantModified(t *testing.T, what string, modified, from time.Time, o Options) {
	t.Helper()
	if o.NoModTime {
		if !modified.IsZero() {
			t.Errorf("%s: Modified = %v, want zero (Options.NoModTime)", what, modified)
		}
		return
	}
	if modified.IsZero() {
		t.Errorf("%s: Modified is zero (set Options.NoModTime if the store cannot tell)", what)
	}
	if now := time.Now(); modified.After(now) || modified.Before(from.Add(-time.Second)) {
		t.Errorf("%s: Modified = %v, want between %v and %v", what, modified, from, now)
	}
}

func testListBlobs(t *testing.T, s store.Store, o Options) {
	lister, _ := store.As[store.BlobLister](s)
	from := time.Now()
	want := map[digest.Digest]int64{}
	var small digest.Digest
	for _, n := range []int{0, 10, 100_000} {
		data, d := RandomBlob(t, n)
		PutBlob(t, s, data)
		want[d] = int64(n)
		if n == 10 {
			small = d
		}
	}
	if err := s.PutRef(ctx(t), NewRef(t, s, "listed", time.Now(), 1)); err != nil {
		t.Fatal(err)
	}
	metas, err := lister.ListBlobs(ctx(t))
	if err != nil {
		t.Fatalf("ListBlobs: %v", err)
	}
	got := map[digest.Digest]int64{}
	for _, m := range metas {
		if _, dup := got[m.Digest]; dup {
			t.Errorf("ListBlobs lists %s twice", m.Digest.Short())
		}
		got[m.Digest] = m.Size
		wantModified(t, "ListBlobs "+m.Digest.Short(), m.Modified, from, o)
	}
	// NewRef put an index and a pack too: 5 blobs, the ref not among them.
	for d, n := range want {
		if size, ok := got[d]; !ok || size != n {
			t.Errorf("ListBlobs: blob %s of %d bytes listed as %d (listed: %v)", d.Short(), n, size, ok)
		}
	}
	if len(got) != len(want)+2 {
		t.Errorf("ListBlobs listed %d blobs, want %d", len(got), len(want)+2)
	}
	del, ok := store.As[store.Deleter](s)
	if !ok {
		return
	}
	if err := del.DeleteBlob(ctx(t), small); err != nil {
		t.Fatal(err)
	}
	metas, err = lister.ListBlobs(ctx(t))
	if err != nil {
		t.Fatalf("ListBlobs after DeleteBlob: %v", err)
	}
	if slices.ContainsFunc(metas, func(m store.BlobMeta) bool { return m.Digest == small }) {
		t.Fatalf("ListBlobs lists %s after DeleteBlob", small.Short())
	}
}

func testListBlobsEmpty(t *testing.T, s store.Store, _ Options) {
	lister, _ := store.As[store.BlobLister](s)
	metas, err := lister.ListBlobs(ctx(t))
	if err != nil || len(metas) != 0 {
		t.Fatalf("ListBlobs of an empty store = %v, %v; want none", metas, err)
	}
}

// testListRefInfo: ListRefInfo lists the keys of a prefix as ListRefs
// does, each with when its ref was written (the store's clock, taken to
// be within a minute of the test's), later for a ref written later.
func testListRefInfo(t *testing.T, s store.Store, _ Options) {
	rl, _ := store.As[store.RefLister](s)
	before := time.Now().Add(-time.Minute)
	for _, k := range []string{"go-first", "go-second", "node-other"} {
		if err := s.PutRef(ctx(t), NewRef(t, s, k, time.Now(), 0)); err != nil {
			t.Fatal(err)
		}
		if k == "go-first" {
			time.Sleep(1100 * time.Millisecond) // past a listing's resolution (S3: seconds)
		}
	}
	after := time.Now().Add(time.Minute)
	infos, err := rl.ListRefInfo(ctx(t), "go-")
	if err != nil {
		t.Fatalf("ListRefInfo(go-): %v", err)
	}
	slices.SortFunc(infos, func(a, b store.RefInfo) int { return strings.Compare(a.Key, b.Key) })
	if len(infos) != 2 || infos[0].Key != "go-first" || infos[1].Key != "go-second" {
		t.Fatalf("ListRefInfo(go-) = %+v, want go-first and go-second", infos)
	}
	for _, in := range infos {
		if in.Modified.Before(before) || in.Modified.After(after) {
			t.Errorf("ListRefInfo: %s modified %s, want between %s and %s", in.Key, in.Modified, before, after)
		}
	}
	if !infos[1].Modified.After(infos[0].Modified) {
		t.Errorf("ListRefInfo: go-second (written later) modified %s, not after go-first's %s", infos[1].Modified, infos[0].Modified)
	}
}

// testNewestReadsFew: with the listing's times, Newest reads a few refs,
// not every ref of the prefix, and still finds the newest.
func testNewestReadsFew(t *testing.T, s store.Store, _ Options) {
	const n, most = 40, MaxLazyReads
	var last string
	for i := range n {
		// Keys grow with time, so the newest wins a tie of the listing's times.
		last = fmt.Sprintf("go-%04d", i)
		if err := s.PutRef(ctx(t), NewRef(t, s, last, time.Now(), 0)); err != nil {
			t.Fatal(err)
		}
	}
	c := &countingRefs{Store: s}
	got, err := store.Newest(ctx(t), c, "go-")
	if err != nil || got.Key != last {
		t.Fatalf("Newest = %v, %v; want %s", got, err, last)
	}
	if r := c.reads.Load(); r > most {
		t.Fatalf("Newest read %d refs of %d, want at most %d", r, n, most)
	}
}

// countingRefs counts the listings of refs and the refs read through it.
type countingRefs struct {
	store.Store
	lists, reads atomic.Int64
}

// Unwrap implements store.Unwrapper.
func (c *countingRefs) Unwrap() store.Store { return c.Store }

func (c *countingRefs) GetRef(ctx context.Context, key string) (*store.Ref, error) {
	c.reads.Add(1)
	return c.Store.GetRef(ctx, key)
}

func (c *countingRefs) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	c.lists.Add(1)
	return c.Store.ListRefs(ctx, prefix)
}

// ListRefInfo implements store.RefLister when the store is one.
func (c *countingRefs) ListRefInfo(ctx context.Context, prefix string) ([]store.RefInfo, error) {
	rl, ok := store.As[store.RefLister](c.Store)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	c.lists.Add(1)
	return rl.ListRefInfo(ctx, prefix)
}
