package storetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

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
	n, err := f.r.Read(p[:min(len(p), f.n)])
	f.n -= n
	return n, err
}

// CancelAfter returns a reader that gives the first n bytes of r, then
// calls cancel and fails with context.Canceled: a put cancelled half way.
func CancelAfter(r io.Reader, n int, cancel context.CancelFunc) io.Reader {
	return &cancelAfter{r: r, n: n, cancel: cancel}
}

type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		return 0, context.Canceled
	}
	n, err := c.r.Read(p[:min(len(p), c.n)])
	c.n -= n
	return n, err
}

// wantGone checks that blob d is not readable after a put of it failed.
func wantGone(t *testing.T, s store.Store, d digest.Digest, after string) {
	t.Helper()
	_, err := s.StatBlob(ctx(t), d)
	wantNotFound(t, "StatBlob after "+after, err)
}

func testCorruptBlobRejected(t *testing.T, s store.Store) {
	data, d := RandomBlob(t, 5000)
	bad := bytes.Clone(data)
	bad[100] ^= 0xff
	err := s.PutBlob(ctx(t), d, int64(len(bad)), bytes.NewReader(bad))
	if err == nil {
		t.Fatal("PutBlob of bytes that do not match the digest succeeded")
	}
	wantGone(t, s, d, "a rejected put")
	err = s.PutBlob(ctx(t), d, int64(len(data))+1, bytes.NewReader(data))
	if err == nil {
		t.Fatal("PutBlob with a size that lies succeeded")
	}
	wantGone(t, s, d, "a put whose size lied")
}

func testFailedPut(t *testing.T, s store.Store) {
	data, d := RandomBlob(t, 3<<20)
	boom := errors.New("source broke")
	err := s.PutBlob(ctx(t), d, int64(len(data)), &failingReader{r: bytes.NewReader(data), n: 1 << 20, err: boom})
	if err == nil {
		t.Fatal("PutBlob from a failing reader succeeded")
	}
	wantGone(t, s, d, "a failed put")
}

func testCancelledPut(t *testing.T, s store.Store) {
	data, d := RandomBlob(t, 3<<20)
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	err := s.PutBlob(c, d, int64(len(data)), CancelAfter(bytes.NewReader(data), 1<<20, cancel))
	if err == nil {
		t.Fatal("cancelled PutBlob succeeded")
	}
	wantGone(t, s, d, "a cancelled put")
}

// testFailedLargePut fails puts of size bytes (past the backend's first
// upload part) after parts were sent: one cancelled near its end, one whose
// last byte is wrong. Neither may finalize the upload (S3 multipart, GCS
// resumable, Azure block list).
func testFailedLargePut(t *testing.T, s store.Store, size int) {
	data, d := RandomBlob(t, size)
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	if err := s.PutBlob(c, d, int64(size), CancelAfter(bytes.NewReader(data), size-size/8, cancel)); err == nil {
		t.Fatal("large PutBlob cancelled near its end succeeded")
	}
	wantGone(t, s, d, "a cancelled large put")
	data[len(data)-1] ^= 1
	if err := s.PutBlob(ctx(t), d, int64(size), bytes.NewReader(data)); err == nil {
		t.Fatal("large PutBlob whose last byte is wrong succeeded")
	}
	wantGone(t, s, d, "a corrupt large put")
}

// checkLeftovers fails t when o.Leftovers finds anything in s, after a
// test that put nothing into it successfully.
func checkLeftovers(t *testing.T, o Options, s store.Store) {
	t.Helper()
	if o.Leftovers == nil || t.Failed() {
		return
	}
	if left := o.Leftovers(t, s); len(left) > 0 {
		t.Errorf("failed puts left behind %d things: %s", len(left), strings.Join(left, ", "))
	}
}

func testMissing(t *testing.T, o Options) {
	s := o.Missing(t)
	CheckAllOps(t, s, ErrorWant{Store: s.String(), Says: o.MissingWant, Secrets: o.Secrets, Misses: o.MissingMisses})
}

// ErrorWant is what CheckAllOps expects of the errors of a store that
// cannot work (its bucket is missing, its credentials are wrong, its
// endpoint is unreachable).
type ErrorWant struct {
	// Store is the store's name, which every error holds.
	Store string
	// Says are what every error says.
	Says []string
	// Secrets are what no error holds.
	Secrets []string
	// Misses names the reads ("GetRef", "StatBlob") that answer a plain
	// miss instead, wrapping store.ErrNotFound, as they would on an empty
	// store: a GCS read of a missing bucket, or an S3 HEAD, whose answer
	// has no body to tell a missing bucket from a missing object.
	Misses []string
	// Skip names operations not called (the caller checks them its own way).
	Skip []string
}

// AllOps are the operations CheckAllOps calls, in order.
var AllOps = []string{"GetRef", "PutBlob", "ListRefs", "StatBlob"}

// CheckAllOps calls each of AllOps on st and checks its error with
// CheckError against w (or, for w.Misses, that it is a plain miss).
func CheckAllOps(t testing.TB, st store.Store, w ErrorWant) {
	t.Helper()
	data, d := RandomBlob(t, 1000)
	c := context.Background()
	for _, op := range AllOps {
		if slices.Contains(w.Skip, op) {
			continue
		}
		var err error
		switch op {
		case "GetRef":
			_, err = st.GetRef(c, "some-key")
		case "PutBlob":
			err = st.PutBlob(c, d, int64(len(data)), bytes.NewReader(data))
		case "ListRefs":
			_, err = st.ListRefs(c, "some")
		case "StatBlob":
			_, err = st.StatBlob(c, d)
		}
		if slices.Contains(w.Misses, op) {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: err = %v, want a plain miss (store.ErrNotFound)", op, err)
			}
			continue
		}
		CheckError(t, op, err, w.Store, w.Says, w.Secrets...)
	}
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
