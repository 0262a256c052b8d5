// Package storetest is the conformance suite every store backend passes:
// each contract of store.Store, checked against a real instance, and each
// optional capability (store.Deleter, store.BlobStager, store.BlobLister)
// that store.As finds in it. Options add what only the backend can tell: a
// store whose bucket is missing and what its errors say, and how to see
// what failed puts left behind. CheckAllOps checks the errors of a store
// that cannot work; Bench measures the same operations.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t) })
//	}
//
//	func BenchmarkConformance(b *testing.B) {
//		storetest.Bench(b, func(b *testing.B) store.Store { return newStore(b) })
//	}
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Options tune the suite for a backend.
type Options struct {
	// LargeSize is the size of the large-blob tests, which should pass the
	// backend's first upload part (multipart threshold). Default 12 MiB.
	LargeSize int

	// Missing, when set, opens a store whose bucket (container, repository)
	// does not exist: each operation on it must fail with an error that says
	// each of MissingWant, except the reads MissingMisses names, which
	// answer a plain miss (see ErrorWant.Misses).
	Missing       func(t *testing.T) store.Store
	MissingWant   []string
	MissingMisses []string
	// Secrets are what no error of the Missing store may hold (credentials).
	Secrets []string

	// NoModTime says the store cannot tell when a blob was written (a
	// registry): BlobInfo.Modified is zero. Otherwise it must be set.
	NoModTime bool

	// Leftovers, when set, returns everything s holds or half holds: its
	// objects and files, and what a failed or cancelled put may leave behind
	// that can be removed (temporary files, incomplete multipart uploads).
	// The suite calls it after each test that puts nothing successfully into
	// its fresh store, so anything it returns is a leftover.
	Leftovers func(t *testing.T, s store.Store) []string

	// Lacks names the optional capabilities the store does not have
	// ("BlobStager", "BlobLister"...): their tests are skipped. A store that
	// lacks a capability Lacks does not name fails, so that losing one (a
	// wrapper that hides it, say) is never a silent skip.
	Lacks []string

	// MaxKeyLen is the longest key the store takes, when it takes fewer
	// than store.ValidateKey's 128 characters (a server that puts a scope
	// in front of each key); 0: 128.
	MaxKeyLen int
}

// Run runs every conformance test against stores made by newStore. Each
// subtest gets a new store; it may share a server with the others but must
// not see their blobs or refs (use a fresh bucket, prefix or repository).
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts ...Options) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.LargeSize == 0 {
		o.LargeSize = 12 << 20
	}
	if o.MaxKeyLen == 0 {
		o.MaxKeyLen = 128
	}
	// clean marks the tests that put nothing successfully: checked
	// with o.Leftovers.
	const clean = true
	tests := []struct {
		name  string
		fn    func(t *testing.T, s store.Store)
		clean bool
	}{
		{"MissingBlob", testMissingBlob, clean},
		{"MissingRef", testMissingRef, clean},
		{"BlobRoundTrip", func(t *testing.T, s store.Store) { testBlobRoundTrip(t, s, o) }, false},
		{"EmptyBlob", testEmptyBlob, false},
		{"LargeBlob", func(t *testing.T, s store.Store) { testLargeBlob(t, s, o.LargeSize) }, false},
		{"PutBlobTwice", testPutBlobTwice, false},
		{"CorruptBlobRejected", testCorruptBlobRejected, clean},
		{"FailedPutLeavesNothing", testFailedPut, clean},
		{"CancelledPutLeavesNothing", testCancelledPut, clean},
		{"FailedLargePutLeavesNothing", func(t *testing.T, s store.Store) { testFailedLargePut(t, s, o.LargeSize) }, clean},
		{"RefRoundTrip", testRefRoundTrip, false},
		{"RefOverwrite", testRefOverwrite, false},
		{"InvalidKeys", testInvalidKeys, false},
		{"OddKeys", func(t *testing.T, s store.Store) { testOddKeys(t, s, o.MaxKeyLen) }, false},
		{"ListRefs", testListRefs, false},
		{"NewestByPrefix", testNewest, false},
		{"ConcurrentPuts", testConcurrentPuts, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			tc.fn(t, s)
			if tc.clean {
				checkLeftovers(t, o, s)
			}
		})
	}
	runCapabilities(t, newStore, o)
	if o.Leftovers != nil {
		t.Run("LeftoversSeesABlob", func(t *testing.T) {
			s := newStore(t)
			PutBlob(t, s, []byte("a blob the store holds"))
			if len(o.Leftovers(t, s)) == 0 {
				t.Fatal("Options.Leftovers finds nothing in a store that holds a blob: it would miss leftovers too")
			}
		})
	}
	if o.Missing != nil {
		t.Run("MissingBucket", func(t *testing.T) { testMissing(t, o) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// RandomBlob returns n random bytes and their digest.
func RandomBlob(t testing.TB, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, digest.FromBytes(b)
}

// PutBlob stores data in s or fails t.
func PutBlob(t testing.TB, s store.Store, data []byte) format.Descriptor {
	t.Helper()
	d := digest.FromBytes(data)
	if err := s.PutBlob(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	return format.Descriptor{Digest: d, Size: int64(len(data))}
}

func readBlob(t *testing.T, s store.Store, d digest.Digest) []byte {
	t.Helper()
	rc, err := s.GetBlob(ctx(t), d)
	if err != nil {
		t.Fatalf("GetBlob(%s): %v", d.Short(), err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading blob %s: %v", d.Short(), err)
	}
	return data
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("%s: err = %v, want one wrapping store.ErrNotFound", what, err)
	}
}

func testMissingBlob(t *testing.T, s store.Store) {
	_, d := RandomBlob(t, 10)
	_, err := s.StatBlob(ctx(t), d)
	wantNotFound(t, "StatBlob of a missing blob", err)
	rc, err := s.GetBlob(ctx(t), d)
	if err == nil {
		// Some backends only report a missing object on the first read.
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	wantNotFound(t, "GetBlob of a missing blob", err)
}

func testMissingRef(t *testing.T, s store.Store) {
	_, err := s.GetRef(ctx(t), "no-such-key")
	wantNotFound(t, "GetRef of a missing key", err)
	keys, err := s.ListRefs(ctx(t), "no-such")
	if err != nil {
		t.Fatalf("ListRefs on an empty store: %v", err)
	}
	if len(keys) != 0 {
		t.Fatalf("ListRefs on an empty store = %v, want none", keys)
	}
	_, err = store.Newest(ctx(t), s, "no-such")
	wantNotFound(t, "Newest on an empty store", err)
}

func testBlobRoundTrip(t *testing.T, s store.Store, o Options) {
	from := time.Now()
	data, d := RandomBlob(t, 100_000)
	PutBlob(t, s, data)
	info, err := s.StatBlob(ctx(t), d)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("StatBlob = %d, %v; want %d, nil", info.Size, err, len(data))
	}
	wantModified(t, "StatBlob", info.Modified, from, o)
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("GetBlob returned %d different bytes", len(got))
	}
}

func testEmptyBlob(t *testing.T, s store.Store) {
	desc := PutBlob(t, s, nil)
	if got := readBlob(t, s, desc.Digest); len(got) != 0 {
		t.Fatalf("empty blob read back as %d bytes", len(got))
	}
}

func testLargeBlob(t *testing.T, s store.Store, size int) {
	data, d := RandomBlob(t, size)
	PutBlob(t, s, data)
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("large blob read back as %d different bytes", len(got))
	}
}

func testPutBlobTwice(t *testing.T, s store.Store) {
	data, d := RandomBlob(t, 1000)
	PutBlob(t, s, data)
	PutBlob(t, s, data)
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Fatal("blob changed after a second put")
	}
}

// NewRef puts an index and n packs of random bytes and returns a ref to them.
func NewRef(t testing.TB, s store.Store, key string, created time.Time, n int) *store.Ref {
	t.Helper()
	idx, _ := RandomBlob(t, 300)
	r := &store.Ref{
		Format:   format.Version,
		Key:      key,
		Index:    PutBlob(t, s, idx),
		Created:  created.UTC(),
		Tool:     "storetest",
		Platform: "linux/amd64",
		Folders:  []string{"cache/go-build", "/abs/mod"},
	}
	for range n {
		p, _ := RandomBlob(t, 2000)
		r.Packs = append(r.Packs, PutBlob(t, s, p))
	}
	return r
}

func sameRef(t *testing.T, got, want *store.Ref) {
	t.Helper()
	if got.Key != want.Key || got.Index != want.Index || !got.Created.Equal(want.Created) || got.Format != want.Format || !slices.Equal(got.Packs, want.Packs) ||
		got.Platform != want.Platform || !slices.Equal(got.Folders, want.Folders) {
		t.Fatalf("ref read back as\n%+v\nwant\n%+v", got, want)
	}
}

func testRefRoundTrip(t *testing.T, s store.Store) {
	want := NewRef(t, s, "go-abc123", time.Now().Truncate(time.Millisecond), 3)
	if err := s.PutRef(ctx(t), want); err != nil {
		t.Fatalf("PutRef: %v", err)
	}
	got, err := s.GetRef(ctx(t), want.Key)
	if err != nil {
		t.Fatalf("GetRef: %v", err)
	}
	sameRef(t, got, want)
}

func testRefOverwrite(t *testing.T, s store.Store) {
	now := time.Now().Truncate(time.Millisecond)
	first := NewRef(t, s, "overwritten", now, 1)
	second := NewRef(t, s, "overwritten", now.Add(time.Second), 2)
	for _, r := range []*store.Ref{first, second} {
		if err := s.PutRef(ctx(t), r); err != nil {
			t.Fatalf("PutRef: %v", err)
		}
	}
	got, err := s.GetRef(ctx(t), "overwritten")
	if err != nil {
		t.Fatal(err)
	}
	sameRef(t, got, second)
}

func testInvalidKeys(t *testing.T, s store.Store) {
	long := string(bytes.Repeat([]byte("k"), 129))
	for _, k := range []string{"", "../escape", "a/b", ".hidden", "-dash", "with space", "semi;colon", long, "a\x00b"} {
		r := NewRef(t, s, "valid", time.Now(), 0)
		r.Key = k
		if err := s.PutRef(ctx(t), r); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("PutRef(%q) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := s.GetRef(ctx(t), k); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("GetRef(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
}

func testOddKeys(t *testing.T, s store.Store, maxLen int) {
	long := string(bytes.Repeat([]byte("k"), maxLen))
	for _, k := range []string{"a", "_under", "v1.2.3", "Mixed-Case_key.x", long, "0123456789"} {
		r := NewRef(t, s, k, time.Now().Truncate(time.Millisecond), 1)
		if err := s.PutRef(ctx(t), r); err != nil {
			t.Fatalf("PutRef(%q): %v", k, err)
		}
		got, err := s.GetRef(ctx(t), k)
		if err != nil {
			t.Fatalf("GetRef(%q): %v", k, err)
		}
		sameRef(t, got, r)
	}
}

func testListRefs(t *testing.T, s store.Store) {
	now := time.Now()
	for _, k := range []string{"go-linux-aaa", "go-linux-bbb", "go-darwin-ccc", "node-ddd"} {
		if err := s.PutRef(ctx(t), NewRef(t, s, k, now, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for prefix, want := range map[string][]string{
		"go-linux-": {"go-linux-aaa", "go-linux-bbb"},
		"go-":       {"go-darwin-ccc", "go-linux-aaa", "go-linux-bbb"},
		"":          {"go-darwin-ccc", "go-linux-aaa", "go-linux-bbb", "node-ddd"},
		"python":    nil,
	} {
		got, err := s.ListRefs(ctx(t), prefix)
		if err != nil {
			t.Fatalf("ListRefs(%q): %v", prefix, err)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("ListRefs(%q) = %v, want %v", prefix, got, want)
		}
	}
}

func testNewest(t *testing.T, s store.Store) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// Published in an order unlike their creation times and key order.
	for i, k := range []string{"go-zzz", "go-mmm", "go-aaa"} {
		created := base.Add(time.Duration([]int{1, 3, 2}[i]) * time.Hour)
		if err := s.PutRef(ctx(t), NewRef(t, s, k, created, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRef(ctx(t), NewRef(t, s, "other-newer", base.Add(9*time.Hour), 0)); err != nil {
		t.Fatal(err)
	}
	got, err := store.Newest(ctx(t), s, "go-")
	if err != nil {
		t.Fatalf("Newest: %v", err)
	}
	if got.Key != "go-mmm" {
		t.Fatalf("Newest(go-) = %q, want go-mmm (the latest created)", got.Key)
	}
}

func testConcurrentPuts(t *testing.T, s store.Store) {
	data, d := RandomBlob(t, 256<<10)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			errs[i] = s.PutBlob(ctx(t), d, int64(len(data)), bytes.NewReader(data))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent PutBlob %d: %v", i, err)
		}
	}
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Fatal("blob corrupted by concurrent puts")
	}
	refs := make([]*store.Ref, 4)
	for i := range refs {
		refs[i] = NewRef(t, s, "raced", time.Now(), 1)
	}
	for i := range refs {
		wg.Go(func() { errs[i] = s.PutRef(ctx(t), refs[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent PutRef %d: %v", i, err)
		}
	}
	got, err := s.GetRef(ctx(t), "raced")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		if got.Index == r.Index {
			return
		}
	}
	t.Fatalf("after concurrent PutRef the ref is none of those put: %+v", got)
}

var prefixes atomic.Int64

// NewPrefix returns an object prefix that no other test of this process
// (nor an earlier run against the same server) uses.
func NewPrefix() string {
	return fmt.Sprintf("run%d/p%d", time.Now().UnixNano(), prefixes.Add(1))
}

// OpenObjectStore opens raw with opener for t, and closes the store's
// bucket when t ends if it has a Close method.
func OpenObjectStore(t testing.TB, opener store.Opener, raw string) *store.ObjectStore {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := opener(context.Background(), u, store.Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", raw, err)
	}
	obj := st.(*store.ObjectStore)
	if c, ok := obj.Bucket().(interface{ Close() error }); ok {
		t.Cleanup(func() { c.Close() })
	}
	return obj
}
