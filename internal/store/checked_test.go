package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

// wrapper is a test double that wraps a store and adds nothing, as the
// engine's and the cli's doubles do.
type wrapper struct{ store.Store }

func (w wrapper) Unwrap() store.Store { return w.Store }

// refsOnly is a store with none of the optional capabilities.
type refsOnly struct{ store.Store }

// TestAsFindsCapabilitiesThroughWrappers: a capability of the backend is
// found through two wrappers (and the outermost layer that has it is
// returned); a wrapper that implements one does not make it appear.
func TestAsFindsCapabilitiesThroughWrappers(t *testing.T) {
	obj := store.NewObjectStore(newStagingMemory("as"))
	st := store.Checked(wrapper{store.WithRetries(obj, store.Options{})})

	if got, ok := store.As[*store.ObjectStore](st); !ok || got != obj {
		t.Errorf("As[*ObjectStore] = %v, %v; want the backend", got, ok)
	}
	if d, ok := store.As[store.Deleter](st); !ok || d != st.(store.Deleter) {
		t.Errorf("As[Deleter] = %T, %v; want the checked store itself", d, ok)
	}
	if _, ok := store.As[store.BlobLister](st); !ok {
		t.Error("As[BlobLister] did not find the object store's listing")
	}
	bs, ok := store.As[store.BlobStager](st)
	if !ok {
		t.Fatal("As[BlobStager] did not find the staging bucket")
	}
	sb, err := bs.StageBlob(t.Context())
	if err != nil {
		t.Fatalf("StageBlob through two wrappers: %v", err)
	}
	sb.Abort()

	bare := store.Checked(wrapper{store.WithRetries(refsOnly{memory.NewStore("bare")}, store.Options{})})
	if d, ok := store.As[store.Deleter](bare); ok {
		t.Errorf("As[Deleter] of a store that cannot delete = %T", d)
	}
	if l, ok := store.As[store.BlobLister](bare); ok {
		t.Errorf("As[BlobLister] of a store that cannot list = %T", l)
	}
	if _, ok := store.As[store.BlobStager](wrapper{refsOnly{obj}}); ok {
		t.Error("As[BlobStager] went past a layer that is no wrapper")
	}
}

// recorder is a store (with the optional capabilities) that records every
// call it gets and fails each with a message that names nothing.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

var errBackend = errors.New("backend failure")

func (r *recorder) record(op string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, op)
	return errBackend
}

func (r *recorder) String() string { return "rec://store" }
func (r *recorder) StatBlob(context.Context, digest.Digest) (store.BlobInfo, error) {
	return store.BlobInfo{}, r.record("StatBlob")
}
func (r *recorder) GetBlob(context.Context, digest.Digest) (io.ReadCloser, error) {
	return nil, r.record("GetBlob")
}
func (r *recorder) PutBlob(context.Context, digest.Digest, int64, io.Reader) error {
	return r.record("PutBlob")
}
func (r *recorder) GetRef(context.Context, string) (*store.Ref, error) {
	return nil, r.record("GetRef")
}
func (r *recorder) PutRef(context.Context, *store.Ref) error { return r.record("PutRef") }
func (r *recorder) ListRefs(context.Context, string) ([]string, error) {
	return nil, r.record("ListRefs")
}
func (r *recorder) DeleteRef(context.Context, string) error         { return r.record("DeleteRef") }
func (r *recorder) DeleteBlob(context.Context, digest.Digest) error { return r.record("DeleteBlob") }
func (r *recorder) ListBlobs(context.Context) ([]store.BlobMeta, error) {
	return nil, r.record("ListBlobs")
}
func (r *recorder) GetBlobRange(context.Context, digest.Digest, int64) (io.ReadCloser, error) {
	return nil, r.record("GetBlobRange")
}
func (r *recorder) StageBlob(context.Context) (store.StagedBlob, error) {
	r.record("StageBlob")
	return &recordedStaged{r: r, dg: digest.NewDigester()}, nil
}

type recordedStaged struct {
	r  *recorder
	dg *digest.Digester
}

func (s *recordedStaged) Write(p []byte) (int, error) { return s.dg.Write(p) }
func (s *recordedStaged) Digest() digest.Digest       { return s.dg.Digest() }
func (s *recordedStaged) Size() int64                 { return s.dg.Size() }
func (s *recordedStaged) Abort()                      { s.r.record("Abort") } //nolint:errcheck // recorded only
func (s *recordedStaged) Commit(context.Context, digest.Digest, int64) error {
	return s.r.record("Commit")
}

// TestCheckedRefusesBeforeTheBackend: an invalid key, prefix, digest or
// ref is refused by Checked, in an error that names the store and the
// operation, and the backend never sees it; the backend's own errors get
// the store, the operation and the key.
func TestCheckedRefusesBeforeTheBackend(t *testing.T) {
	c := t.Context()
	rec := &recorder{}
	st := store.Checked(rec)
	bad := digest.Digest("sha256:nothex")
	badKey := "no spaces"
	del, _ := store.As[store.Deleter](st)
	ranger, _ := store.As[store.BlobRanger](st)
	invalid := []struct {
		op  string
		err func() error
	}{
		{"stat blob", func() error { _, err := st.StatBlob(c, bad); return err }},
		{"get blob", func() error { _, err := st.GetBlob(c, bad); return err }},
		{"get blob range", func() error { _, err := ranger.GetBlobRange(c, bad, 0); return err }},
		{"put blob", func() error { return st.PutBlob(c, bad, 0, strings.NewReader("")) }},
		{"get ref", func() error { _, err := st.GetRef(c, badKey); return err }},
		{"put ref", func() error { return st.PutRef(c, &store.Ref{Format: 1, Key: badKey}) }},
		{"put ref", func() error { return st.PutRef(c, nil) }},
		{"list refs", func() error { _, err := st.ListRefs(c, "-x"); return err }},
		{"delete ref", func() error { return del.DeleteRef(c, badKey) }},
		{"delete blob", func() error { return del.DeleteBlob(c, bad) }},
	}
	for _, tc := range invalid {
		err := tc.err()
		if err == nil {
			t.Errorf("%s of an invalid argument succeeded", tc.op)
			continue
		}
		if !strings.HasPrefix(err.Error(), "rec://store: "+tc.op+": ") || errors.Is(err, errBackend) {
			t.Errorf("%s: error %q does not start with the store and the operation, or came from the backend", tc.op, err)
		}
	}
	if len(rec.calls) != 0 {
		t.Fatalf("the backend saw invalid arguments: %v", rec.calls)
	}

	// A staged blob is checked at Commit before the backend's Commit.
	bs, _ := store.As[store.BlobStager](st)
	sb, err := bs.StageBlob(c)
	if err != nil {
		t.Fatal(err)
	}
	sb.Write([]byte("some bytes"))
	_, other := storetest.RandomBlob(t, 10)
	if err := sb.Commit(c, other, 10); !errors.Is(err, digest.ErrMismatch) || !strings.HasPrefix(err.Error(), "rec://store: put blob "+other.Short()) {
		t.Errorf("Commit under another digest = %v; want a mismatch naming the store and the blob", err)
	}
	if strings.Join(rec.calls, " ") != "StageBlob Abort" {
		t.Errorf("backend calls for a lying commit = %v; want StageBlob Abort", rec.calls)
	}

	// Valid arguments reach the backend, whose unnamed errors are named.
	rec.calls = nil
	d := digest.FromBytes(nil)
	named := []struct {
		prefix string
		err    func() error
	}{
		{"rec://store: stat blob " + d.Short() + ": ", func() error { _, err := st.StatBlob(c, d); return err }},
		{"rec://store: get ref \"go-1\": ", func() error { _, err := st.GetRef(c, "go-1"); return err }},
		{"rec://store: list refs \"go-\": ", func() error { _, err := st.ListRefs(c, "go-"); return err }},
		{"rec://store: delete ref \"go-1\": ", func() error { return del.DeleteRef(c, "go-1") }},
		{"rec://store: list blobs: ", func() error { _, err := st.(store.BlobLister).ListBlobs(c); return err }},
	}
	for _, tc := range named {
		if err := tc.err(); !errors.Is(err, errBackend) || err.Error() != tc.prefix+errBackend.Error() {
			t.Errorf("error %q, want %q", err, tc.prefix+errBackend.Error())
		}
	}
	if len(rec.calls) != len(named) {
		t.Errorf("backend calls = %v, want %d", rec.calls, len(named))
	}
}

// TestCheckedKeepsNamedErrors: an error that names the store already
// (every ObjectStore error does) is returned as it is.
func TestCheckedKeepsNamedErrors(t *testing.T) {
	st := store.Checked(memory.NewStore("named"))
	_, err := st.GetRef(t.Context(), "go-1")
	if !errors.Is(err, store.ErrNotFound) || strings.Count(err.Error(), "mem://named") != 1 {
		t.Fatalf("GetRef of a missing key = %v; want ErrNotFound, naming the store once", err)
	}
	if store.Checked(st) != st {
		t.Error("Checked of a checked store wraps it again")
	}
}

// stagingMemory is a memory bucket that stages, as a directory does.
type stagingMemory struct{ *memory.Bucket }

func newStagingMemory(name string) stagingMemory { return stagingMemory{memory.New(name)} }

func (b stagingMemory) Stage(context.Context) (store.Staged, error) {
	return &memStaged{b: b}, nil
}

type memStaged struct {
	b   stagingMemory
	buf bytes.Buffer
}

func (s *memStaged) Write(p []byte) (int, error) { return s.buf.Write(p) }
func (s *memStaged) Abort()                      { s.buf.Reset() }
func (s *memStaged) Commit(ctx context.Context, name string) error {
	return s.b.Put(ctx, name, int64(s.buf.Len()), &s.buf)
}

// TestStagedBlobChecksItsDigest: an object store's staged blob hashes what
// is written; a commit under another digest or size is refused with
// digest.ErrMismatch and leaves nothing readable, under either digest.
func TestStagedBlobChecksItsDigest(t *testing.T) {
	dir, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []store.Bucket{dir, newStagingMemory("staged")} {
		t.Run(b.String()[:strings.Index(b.String(), ":")], func(t *testing.T) {
			testStagedDigest(t, store.NewObjectStore(b))
		})
	}
}

func testStagedDigest(t *testing.T, s *store.ObjectStore) {
	c := t.Context()
	data, d := storetest.RandomBlob(t, 1000)
	_, other := storetest.RandomBlob(t, 1000)
	stage := func() store.StagedBlob {
		t.Helper()
		sb, err := s.StageBlob(c)
		if err != nil {
			t.Fatal(err)
		}
		sb.Write(data[:400])
		sb.Write(data[400:])
		if sb.Digest() != d || sb.Size() != int64(len(data)) {
			t.Fatalf("staged blob says %s, %d bytes; wrote %s, %d", sb.Digest().Short(), sb.Size(), d.Short(), len(data))
		}
		return sb
	}
	for _, lie := range []struct {
		name string
		d    digest.Digest
		size int64
	}{{"digest", other, int64(len(data))}, {"size", d, int64(len(data)) - 1}, {"both", other, 1}} {
		err := stage().Commit(c, lie.d, lie.size)
		if !errors.Is(err, digest.ErrMismatch) || !strings.Contains(err.Error(), s.String()) {
			t.Errorf("Commit with a wrong %s = %v; want ErrMismatch naming the store", lie.name, err)
		}
		for _, dd := range []digest.Digest{d, other} {
			if _, err := s.StatBlob(c, dd); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("after a commit with a wrong %s, blob %s: %v; want not found", lie.name, dd.Short(), err)
			}
		}
	}
	if err := stage().Commit(c, d, int64(len(data))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if info, err := s.StatBlob(c, d); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("committed blob: %+v, %v", info, err)
	}
}

// TestStatBlobModified: a directory and the memory bucket say when a blob
// was written; ListBlobs gives the same.
func TestStatBlobModified(t *testing.T) {
	dir, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []store.Bucket{dir, memory.New("mod")} {
		s := store.NewObjectStore(b)
		before := time.Now().Add(-time.Second) // file times may be coarser than the clock
		desc := storetest.PutBlob(t, s, []byte("hello"))
		after := time.Now().Add(time.Second)
		info, err := s.StatBlob(t.Context(), desc.Digest)
		if err != nil || info.Size != 5 || info.Modified.Before(before) || info.Modified.After(after) {
			t.Errorf("%s: StatBlob = %+v, %v; want 5 bytes modified between %s and %s", b, info, err, before, after)
		}
		blobs, err := s.ListBlobs(t.Context())
		if err != nil || len(blobs) != 1 || blobs[0].Digest != desc.Digest || blobs[0].BlobInfo != info {
			t.Errorf("%s: ListBlobs = %+v, %v; want [%s %+v]", b, blobs, err, desc.Digest.Short(), info)
		}
	}
}

// TestRefs: every ref under a prefix, however many; none is no error.
func TestRefs(t *testing.T) {
	s := memory.NewStore("refs")
	for i := range store.MaxRestoreCandidates + 1 {
		ref := storetest.NewRef(t, s, fmt.Sprintf("go-%d", i), time.Unix(int64(i), 0), 0)
		if err := s.PutRef(t.Context(), ref); err != nil {
			t.Fatal(err)
		}
	}
	if refs, err := store.Refs(t.Context(), s, "go-"); err != nil || len(refs) != store.MaxRestoreCandidates+1 {
		t.Fatalf("Refs(go-) = %d refs, %v; want %d", len(refs), err, store.MaxRestoreCandidates+1)
	}
	if refs, err := store.Refs(t.Context(), s, "py-"); err != nil || len(refs) != 0 {
		t.Fatalf("Refs(py-) = %v, %v; want none", refs, err)
	}
	if _, err := store.Newest(t.Context(), s, "go-"); err == nil {
		t.Fatal("Newest over more than MaxRestoreCandidates keys succeeded")
	}
}
