// Package storetest is the conformance suite every store backend passes:
// each contract of store.Store, checked against a real instance.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t) })
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
	"os"
	"slices"
	"strings"
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
	// LargeSize is the size of the large-blob test, which should pass the
	// backend's multipart threshold. Default 12 MiB.
	LargeSize int
}

// DisallowSkipEnv, when set (CI sets it), turns SkipUnlessServer's skips
// into failures: in CI a missing server is a failure.
const DisallowSkipEnv = "CACHE_TEST_DISALLOW_SKIP"

// SkipUnless skips t with why, or fails it when DisallowSkipEnv is set.
func SkipUnless(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv(DisallowSkipEnv) != "" {
		t.Fatalf("%s (and %s is set, so this cannot be skipped)", why, DisallowSkipEnv)
	}
	t.Skip(why)
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
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"MissingBlob", testMissingBlob},
		{"MissingRef", testMissingRef},
		{"BlobRoundTrip", testBlobRoundTrip},
		{"EmptyBlob", testEmptyBlob},
		{"LargeBlob", func(t *testing.T, s store.Store) { testLargeBlob(t, s, o.LargeSize) }},
		{"PutBlobTwice", testPutBlobTwice},
		{"CorruptBlobRejected", testCorruptBlobRejected},
		{"FailedPutLeavesNothing", testFailedPut},
		{"CancelledPutLeavesNothing", testCancelledPut},
		{"RefRoundTrip", testRefRoundTrip},
		{"RefOverwrite", testRefOverwrite},
		{"InvalidKeys", testInvalidKeys},
		{"OddKeys", testOddKeys},
		{"ListRefs", testListRefs},
		{"NewestByPrefix", testNewest},
		{"ConcurrentPuts", testConcurrentPuts},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			tc.fn(t, s)
		})
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

func testBlobRoundTrip(t *testing.T, s store.Store) {
	data, d := RandomBlob(t, 100_000)
	PutBlob(t, s, data)
	info, err := s.StatBlob(ctx(t), d)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("StatBlob = %d, %v; want %d, nil", info.Size, err, len(data))
	}
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

func testCorruptBlobRejected(t *testing.T, s store.Store) {
	data, d := RandomBlob(t, 5000)
	bad := append([]byte{}, data...)
	bad[100] ^= 0xff
	err := s.PutBlob(ctx(t), d, int64(len(bad)), bytes.NewReader(bad))
	if err == nil {
		t.Fatal("PutBlob of bytes that do not match the digest succeeded")
	}
	_, err = s.StatBlob(ctx(t), d)
	wantNotFound(t, "StatBlob after a rejected put", err)
	err = s.PutBlob(ctx(t), d, int64(len(data))+1, bytes.NewReader(data))
	if err == nil {
		t.Fatal("PutBlob with a size that lies succeeded")
	}
	_, err = s.StatBlob(ctx(t), d)
	wantNotFound(t, "StatBlob after a put whose size lied", err)
}

// failingReader gives n bytes then an error.
type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func testFailedPut(t *testing.T, s store.Store) {
	data, d := RandomBlob(t, 3<<20)
	boom := errors.New("source broke")
	err := s.PutBlob(ctx(t), d, int64(len(data)), &failingReader{r: bytes.NewReader(data), n: 1 << 20, err: boom})
	if err == nil {
		t.Fatal("PutBlob from a failing reader succeeded")
	}
	_, err = s.StatBlob(ctx(t), d)
	wantNotFound(t, "StatBlob after a failed put", err)
}

// cancelReader cancels its context after n bytes.
type cancelReader struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		return 0, context.Canceled
	}
	if len(p) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

func testCancelledPut(t *testing.T, s store.Store) {
	data, d := RandomBlob(t, 3<<20)
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	err := s.PutBlob(c, d, int64(len(data)), &cancelReader{r: bytes.NewReader(data), n: 1 << 20, cancel: cancel})
	if err == nil {
		t.Fatal("cancelled PutBlob succeeded")
	}
	_, err = s.StatBlob(ctx(t), d)
	wantNotFound(t, "StatBlob after a cancelled put", err)
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

func testOddKeys(t *testing.T, s store.Store) {
	long := string(bytes.Repeat([]byte("k"), 128))
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

// CheckError asserts that err is one line, names the store, says each of
// wants, is not a plain miss, and holds no secret.
func CheckError(t testing.TB, op string, err error, storeName string, wants []string, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want an error", op)
	}
	msg := err.Error()
	t.Logf("%s: %s", op, msg)
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("%s: error is not one line: %q", op, msg)
	}
	if !strings.Contains(msg, storeName) {
		t.Errorf("%s: error does not name the store %s: %q", op, storeName, msg)
	}
	for _, w := range wants {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: error does not say %q: %q", op, w, msg)
		}
	}
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			t.Errorf("%s: error holds a secret: %q", op, msg)
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: error wraps store.ErrNotFound: a broken store would look like a cache miss", op)
	}
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
