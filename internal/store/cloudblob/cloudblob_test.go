package cloudblob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"

	"gocloud.dev/blob"
	"gocloud.dev/blob/memblob"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

func newBucket(t *testing.T, partSize int) (*cloudblob.Bucket, *blob.Bucket) {
	bb := memblob.OpenBucket(nil)
	t.Cleanup(func() { bb.Close() })
	return cloudblob.New(cloudblob.Config{Bucket: bb, Name: "mem://test/prefix", Prefix: "prefix/", PartSize: partSize, Concurrency: 3}), bb
}

// TestConformance runs the store suite over gocloud's in-memory driver, with
// a tiny part size so that large blobs take the ranged, parallel read path.
func TestConformance(t *testing.T) {
	raw := map[store.Store]*blob.Bucket{}
	storetest.Run(t, func(t *testing.T) store.Store {
		b, bb := newBucket(t, 256<<10)
		s := store.NewObjectStore(b)
		raw[s] = bb
		return s
	}, storetest.Options{LargeSize: 5<<20 + 12345, Lacks: []string{"BlobStager"}, Leftovers: func(t *testing.T, s store.Store) []string {
		var left []string
		it := raw[s].List(nil)
		for {
			o, err := it.Next(t.Context())
			if err == io.EOF {
				return left
			}
			if err != nil {
				t.Fatal(err)
			}
			left = append(left, o.Key)
		}
	}})
}

func TestRangedRead(t *testing.T) {
	const part = 1000
	for _, size := range []int{0, 1, part, 2 * part, 2*part + 1, 3 * part, 10*part + 7} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			b, _ := newBucket(t, part)
			data := make([]byte, size)
			rand.Read(data)
			if err := b.Put(t.Context(), "obj", int64(size), bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			rc, err := b.Get(t.Context(), "obj")
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			// iotest.TestReader checks odd read sizes and EOF behaviour.
			if err := iotest.TestReader(rc, data); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRangedReadCloseEarly(t *testing.T) {
	b, _ := newBucket(t, 1000)
	data := make([]byte, 50_000)
	rand.Read(data)
	if err := b.Put(t.Context(), "obj", int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	rc, err := b.Get(t.Context(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3500)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, data[:3500]) {
		t.Fatal("wrong bytes")
	}
	rc.Close() // must stop the fetches without deadlock (the test would hang)
	if _, err := rc.Read(buf); err == nil {
		t.Fatal("read after close succeeded")
	}
}

func TestRangedReadObjectGone(t *testing.T) {
	b, bb := newBucket(t, 1000)
	data := make([]byte, 20_000)
	rand.Read(data)
	if err := b.Put(t.Context(), "obj", int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	rc, err := b.Get(t.Context(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	bb.Delete(t.Context(), "prefix/obj")
	if _, err := io.ReadAll(rc); err == nil {
		t.Fatal("reading an object deleted under the reader succeeded")
	}
}

func TestFailedPutLeavesNothing(t *testing.T) {
	b, bb := newBucket(t, 1000)
	boom := errors.New("disk on fire")
	src := io.MultiReader(bytes.NewReader(make([]byte, 5000)), iotest.ErrReader(boom))
	err := b.Put(t.Context(), "obj", 10000, src)
	if !errors.Is(err, boom) {
		t.Fatalf("Put = %v, want the source's error", err)
	}
	if ok, _ := bb.Exists(t.Context(), "prefix/obj"); ok {
		t.Fatal("a failed Put left an object")
	}
}

func TestCancelledPutLeavesNothing(t *testing.T) {
	b, bb := newBucket(t, 1000)
	ctx, cancel := context.WithCancel(t.Context())
	src := io.MultiReader(bytes.NewReader(make([]byte, 5000)), readerFunc(func([]byte) (int, error) {
		cancel()
		return 0, nil
	}), bytes.NewReader(make([]byte, 5000)))
	if err := b.Put(ctx, "obj", 10000, src); err == nil {
		t.Fatal("cancelled Put succeeded")
	}
	if ok, _ := bb.Exists(t.Context(), "prefix/obj"); ok {
		t.Fatal("a cancelled Put left an object")
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestListAndDeleteUnderPrefix(t *testing.T) {
	b, bb := newBucket(t, 1000)
	ctx := t.Context()
	bb.WriteAll(ctx, "outside/v1/refs/x", []byte("x"), nil)
	for _, n := range []string{"v1/refs/a", "v1/refs/b", "v1/blobs/sha256/c"} {
		if err := b.Put(ctx, n, 1, strings.NewReader("1")); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.List(ctx, "v1/refs/")
	if err != nil || strings.Join(got, ",") != "v1/refs/a,v1/refs/b" {
		t.Fatalf("List = %v, %v", got, err)
	}
	if err := b.Delete(ctx, "v1/refs/a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "v1/refs/a"); err != nil {
		t.Fatalf("deleting a missing object: %v", err)
	}
	if _, err := b.Stat(ctx, "v1/refs/a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat after Delete = %v", err)
	}
	for _, n := range []string{"", "/abs", "a/../b", "../x", "a//b"} {
		if err := b.Put(ctx, n, 1, strings.NewReader("1")); err == nil {
			t.Errorf("Put(%q) succeeded", n)
		}
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = http.Get("http://" + addr + "/bucket/key?sig=SECRETSIG")
	if err == nil {
		t.Fatal("GET of a closed port succeeded")
	}
	mapped := cloudblob.MapError(fmt.Errorf("operation error S3: GetObject,\n%w", err), nil, nil)
	if want := "cannot reach http://" + addr + ": connection refused"; mapped.Error() != want {
		t.Fatalf("MapError = %q, want %q", mapped, want)
	}
	var ne *storeerr.NetError
	if !errors.As(mapped, &ne) || !ne.Refused || !errors.Is(mapped, syscall.ECONNREFUSED) || !errors.Is(mapped, err) {
		t.Fatalf("MapError = %#v: no refused *storeerr.NetError wrapping the cause", mapped)
	}
}

func TestMapError(t *testing.T) {
	ctxErr := cloudblob.MapError(fmt.Errorf("op: %w", context.Canceled), nil, nil)
	if !errors.Is(ctxErr, context.Canceled) || ctxErr.Error() != "context canceled" {
		t.Errorf("cancelled: %v", ctxErr)
	}
	secret := "s3cr3t/Key+value=="
	raw := errors.New("api error SignatureDoesNotMatch:\n  key " + secret + "\n  url https://x.blob.core.windows.net/c/b?sv=1&sig=abc%2Bdef&se=2")
	got := cloudblob.MapError(raw, nil, []string{secret}).Error()
	if strings.Contains(got, "\n") || strings.Contains(got, secret) || strings.Contains(got, "abc%2Bdef") {
		t.Fatalf("MapError = %q: has a newline or a secret", got)
	}
	classified := cloudblob.MapError(raw, func(error) (string, bool) { return "access denied", true }, nil)
	if classified.Error() != "access denied" || !errors.Is(classified, raw) {
		t.Fatalf("classified = %v", classified)
	}
	if again := cloudblob.MapError(classified, nil, nil); again != classified {
		t.Fatal("an error already mapped was mapped again")
	}
	long := cloudblob.MapError(errors.New(strings.Repeat("é", 1000)), nil, nil).Error()
	if len(long) > 603 || !strings.HasSuffix(long, "...") {
		t.Fatalf("MapError did not cut a long message: %d bytes", len(long))
	}
}

func TestOpenError(t *testing.T) {
	cause := errors.New("open bucket s3://b?sig=abc: operation error S3: HeadBucket,\n  key k3y-S3CRET failed")
	err := cloudblob.OpenError("s3://b", cause, []string{"k3y-S3CRET"})
	if want := "s3://b: opening: operation error S3: HeadBucket, key REDACTED failed"; err.Error() != want {
		t.Errorf("OpenError = %q, want %q", err, want)
	}
	if !errors.Is(err, cause) {
		t.Error("OpenError does not wrap its cause")
	}
	if got := cloudblob.OpenError("gs://b", errors.New("no credentials"), nil).Error(); got != "gs://b: opening: no credentials" {
		t.Errorf("OpenError without the prefix = %q", got)
	}
}

// TestEnvSecrets: the values of the variables, and the secret fields of a
// connection string or a SAS query alone (storeerr.TestScrub checks the
// rules).
func TestEnvSecrets(t *testing.T) {
	t.Setenv("TC_TEST_CONN", "AccountName=a;AccountKey=k3yk3y==;")
	sec := cloudblob.EnvSecrets("TC_TEST_CONN", "TC_TEST_UNSET")
	if len(sec) != 2 || sec[1] != "k3yk3y==" {
		t.Fatalf("EnvSecrets = %q", sec)
	}
	t.Setenv("TC_TEST_SAS", "?sv=2020&sig=c2ln%2B&se=1")
	if sec := cloudblob.EnvSecrets("TC_TEST_SAS"); len(sec) != 2 || sec[1] != "c2ln+" {
		t.Fatalf("EnvSecrets = %q", sec)
	}
}

func TestPrefixAndName(t *testing.T) {
	for in, want := range map[string]string{"": "", "/": "", "/a": "a/", "/a/b/": "a/b/", "a": "a/"} {
		if got, err := cloudblob.Prefix(in); err != nil || got != want {
			t.Errorf("Prefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"/a//b", "/a/../b", "/./a"} {
		if _, err := cloudblob.Prefix(in); err == nil {
			t.Errorf("Prefix(%q) succeeded", in)
		}
	}
	u, _ := url.Parse("s3://user:pw@bucket/some/prefix/?endpoint=http://x&secret=y")
	if got := cloudblob.Name(u); got != "s3://bucket/some/prefix" {
		t.Errorf("Name = %q", got)
	}
	u, _ = url.Parse("gs://bucket")
	if got := cloudblob.Name(u); got != "gs://bucket" {
		t.Errorf("Name = %q", got)
	}
}

// TestLocate: the bucket URL checks every cloud backend shares.
func TestLocate(t *testing.T) {
	for _, tc := range []struct {
		url, scheme, what, prefix, err string
	}{
		{"s3://b/team/cache", "s3", "bucket", "team/cache/", ""},
		{"gs://b", "gs", "bucket", "", ""},
		{"s3:///cache", "s3", "bucket", "", "no bucket: write s3://BUCKET/PREFIX"},
		{"azblob:///x", "azblob", "container", "", "no container: write azblob://CONTAINER/PREFIX"},
		{"gs://b/a/../c", "gs", "bucket", "", `invalid prefix path "a/../c"`},
		{"s3://b/x", "gs", "bucket", "", "no bucket"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		_, prefix, err := cloudblob.Locate(u, tc.scheme, tc.what)
		switch {
		case tc.err == "" && (err != nil || prefix != tc.prefix):
			t.Errorf("Locate(%s) = %q, %v; want %q", tc.url, prefix, err, tc.prefix)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, store.ErrBadURL)):
			t.Errorf("Locate(%s): %v; want a bad URL saying %q", tc.url, err, tc.err)
		}
	}
}
