package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// fakeStore fails its operations as a test scripts them.
type fakeStore struct {
	mu    sync.Mutex
	calls map[string]int
	// fail returns the error of call n (1-based) of op, or nil.
	fail func(op string, n int) error
	blob []byte
	// cutAt, when > 0, makes blob readers fail with a reset after that
	// many bytes, for the first cuts readers.
	cutAt   int64
	cuts    int
	offsets []int64
	puts    [][]byte
}

func (f *fakeStore) call(op string) error {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[op]++
	n := f.calls[op]
	f.mu.Unlock()
	if f.fail == nil {
		return nil
	}
	return f.fail(op, n)
}

func (f *fakeStore) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeStore) StatBlob(ctx context.Context, d digest.Digest) (BlobInfo, error) {
	return BlobInfo{Size: int64(len(f.blob))}, f.call("stat")
}

func (f *fakeStore) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	return f.GetBlobRange(ctx, d, 0)
}

func (f *fakeStore) GetBlobRange(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	if err := f.call("get"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offsets = append(f.offsets, off)
	var r io.Reader = bytes.NewReader(f.blob[off:])
	if f.cuts > 0 && f.cutAt > 0 {
		f.cuts--
		r = io.MultiReader(io.LimitReader(r, f.cutAt), errReader{syscall.ECONNRESET})
	}
	return io.NopCloser(r), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func (f *fakeStore) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	data, rerr := io.ReadAll(io.LimitReader(r, 100))
	f.mu.Lock()
	f.puts = append(f.puts, data)
	f.mu.Unlock()
	if err := f.call("putblob"); err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	rest, err := io.ReadAll(r)
	f.mu.Lock()
	f.puts[len(f.puts)-1] = append(data, rest...)
	f.mu.Unlock()
	return err
}

func (f *fakeStore) GetRef(ctx context.Context, key string) (*Ref, error) {
	if err := f.call("getref"); err != nil {
		return nil, err
	}
	return &Ref{Key: key}, nil
}

func (f *fakeStore) PutRef(ctx context.Context, ref *Ref) error { return f.call("putref") }

func (f *fakeStore) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	return nil, f.call("list")
}

func (f *fakeStore) String() string { return "fake://store" }

// logLines collects the lines of a Logf.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logLines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func fastOptions(l *logLines) Options {
	return Options{RetryDelay: time.Millisecond, Logf: l.logf}
}

// resetTwice fails the first two calls of each operation with a reset.
func resetTwice(_ string, n int) error {
	if n <= 2 {
		return fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
	}
	return nil
}

func TestRetriesTransientThenSucceeds(t *testing.T) {
	f := &fakeStore{fail: resetTwice}
	var l logLines
	st := WithRetries(f, fastOptions(&l))
	if _, err := st.GetRef(t.Context(), "k"); err != nil {
		t.Fatalf("GetRef after 2 resets: %v", err)
	}
	if n := f.count("getref"); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	lines := l.get()
	if len(lines) != 2 || !strings.Contains(lines[0], `fake://store: get ref "k" failed (connection reset); retrying in`) ||
		!strings.HasSuffix(lines[0], "(attempt 2 of 5)") || !strings.HasSuffix(lines[1], "(attempt 3 of 5)") {
		t.Fatalf("log lines = %q", lines)
	}
}

func TestRetriesAreBounded(t *testing.T) {
	reset := fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
	f := &fakeStore{fail: func(string, int) error { return reset }}
	var l logLines
	opts := fastOptions(&l)
	opts.Retries = 2
	_, err := WithRetries(f, opts).StatBlob(t.Context(), digest.FromBytes(nil))
	if !errors.Is(err, syscall.ECONNRESET) || !strings.HasSuffix(err.Error(), "(gave up after 3 attempts)") {
		t.Fatalf("err = %v", err)
	}
	if f.count("stat") != 3 || len(l.get()) != 2 {
		t.Fatalf("%d attempts, %d log lines; want 3 and 2", f.count("stat"), len(l.get()))
	}
	f2 := &fakeStore{fail: func(string, int) error { return reset }}
	opts.Retries = -1
	if _, err := WithRetries(f2, opts).StatBlob(t.Context(), digest.FromBytes(nil)); err != reset || f2.count("stat") != 1 {
		t.Fatalf("Retries -1: err %v after %d attempts, want the error itself after 1", err, f2.count("stat"))
	}
}

func TestPermanentFailuresAreNotRetried(t *testing.T) {
	forbidden := errors.New("access denied (HTTP 403)")
	for name, err := range map[string]error{
		"not found": fmt.Errorf("x: %w", ErrNotFound),
		"mismatch":  fmt.Errorf("x: %w", digest.ErrMismatch),
		"unknown":   errors.New("something odd"),
		"403":       forbidden,
		"cancelled": context.Canceled,
	} {
		t.Run(name, func(t *testing.T) {
			f := &fakeStore{fail: func(string, int) error { return err }}
			var l logLines
			st := WithRetries(f, fastOptions(&l))
			_, got := st.GetRef(t.Context(), "k")
			if got != err || f.count("getref") != 1 || len(l.get()) != 0 {
				t.Fatalf("err %v after %d attempts, log %q; want the error itself, once, no log", got, f.count("getref"), l.get())
			}
		})
	}
}

// statusServer answers each request with the next status of codes (the
// last one repeats), with Retry-After ra on non-2xx answers.
func statusServer(t *testing.T, ra string, codes ...int) (*httptest.Server, *int) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		c := codes[min(n, len(codes)-1)]
		n++
		mu.Unlock()
		if c >= 300 && ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(c)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestStatusDecidesRetries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		codes    []int
		op       string
		attempts int
		ok       bool
	}{
		{"503 then 200", []int{503, 200}, "get", 2, true},
		{"429 then 200", []int{429, 200}, "get", 2, true},
		{"500 502 504 200", []int{500, 502, 504, 200}, "get", 4, true},
		{"403", []int{403}, "get", 1, false},
		{"404", []int{404}, "get", 1, false},
		{"401", []int{401}, "get", 1, false},
		{"503 forever", []int{503}, "get", 5, false},
		{"ref put 503 then 201", []int{503, 201}, "put", 2, true},
		{"ref put 500", []int{500, 201}, "put", 1, false},
		{"ref put 502", []int{502, 201}, "put", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, n := statusServer(t, "", tc.codes...)
			var l logLines
			st := WithRetries(&statusStore{url: srv.URL}, fastOptions(&l))
			var err error
			if tc.op == "get" {
				_, err = st.GetRef(t.Context(), "k")
			} else {
				err = st.PutRef(t.Context(), &Ref{Key: "k"})
			}
			if (err == nil) != tc.ok || *n != tc.attempts {
				t.Fatalf("err %v after %d requests; want ok=%v after %d", err, *n, tc.ok, tc.attempts)
			}
		})
	}
}

// statusStore is a Store whose ref operations are one HTTP request each,
// failing on a non-2xx answer, as a backend's SDK would.
type statusStore struct {
	fakeStore
	url string
}

func (s *statusStore) do(ctx context.Context, method string) error {
	req, _ := http.NewRequestWithContext(ctx, method, s.url, nil)
	resp, err := (&http.Client{Transport: WatchTransport(nil, 2*time.Second)}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("server answered %d", resp.StatusCode)
	}
	return nil
}

func (s *statusStore) GetRef(ctx context.Context, key string) (*Ref, error) {
	return &Ref{Key: key}, s.do(ctx, http.MethodGet)
}

func (s *statusStore) PutRef(ctx context.Context, ref *Ref) error { return s.do(ctx, http.MethodPut) }

func TestRetryAfter(t *testing.T) {
	srv, n := statusServer(t, "1", 503, 200)
	var l logLines
	st := WithRetries(&statusStore{url: srv.URL}, fastOptions(&l))
	start := time.Now()
	if _, err := st.GetRef(t.Context(), "k"); err != nil || *n != 2 {
		t.Fatalf("err %v after %d requests", err, *n)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("retried after %v, want the 1 s of Retry-After", d)
	}
	if lines := l.get(); len(lines) != 1 || !strings.Contains(lines[0], "(HTTP 503); retrying in 1s (attempt 2 of 5)") {
		t.Fatalf("log = %q", lines)
	}

	// A Retry-After past MaxRetryWait ends the retries at once.
	srv2, n2 := statusServer(t, "120", 429, 200)
	opts := fastOptions(&l)
	opts.MaxRetryWait = 5 * time.Second
	_, err := WithRetries(&statusStore{url: srv2.URL}, opts).GetRef(t.Context(), "k")
	if err == nil || *n2 != 1 || !strings.Contains(err.Error(), "the store asks to wait 2m0s, more than 5s") {
		t.Fatalf("err %v after %d requests", err, *n2)
	}
}

func TestPutRefAtMostOnce(t *testing.T) {
	// A reset after the request was sent leaves unknown whether the ref
	// was written: it is not sent again.
	f := &fakeStore{fail: func(string, int) error { return fmt.Errorf("read tcp: %w", syscall.ECONNRESET) }}
	var l logLines
	if err := WithRetries(f, fastOptions(&l)).PutRef(t.Context(), &Ref{Key: "k"}); err == nil || f.count("putref") != 1 {
		t.Fatalf("err %v after %d attempts, want a failure after 1", err, f.count("putref"))
	}
}

func TestResumesFromTheByteReached(t *testing.T) {
	data := make([]byte, 100_000)
	rand.Read(data)
	f := &fakeStore{blob: data, cutAt: 30_000, cuts: 3}
	var l logLines
	rc, err := WithRetries(f, fastOptions(&l)).GetBlob(t.Context(), digest.FromBytes(data))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if want := []int64{0, 30_000, 60_000, 90_000}; fmt.Sprint(f.offsets) != fmt.Sprint(want) {
		t.Fatalf("opened at %v, want %v", f.offsets, want)
	}
	if lines := l.get(); len(lines) != 3 || !strings.Contains(lines[1], "reading blob") || !strings.Contains(lines[1], "at byte 60000 failed (connection reset)") {
		t.Fatalf("log = %q", lines)
	}
	// The open and the resumes share one budget.
	f = &fakeStore{blob: data, cutAt: 10_000, cuts: 10}
	rc, _ = WithRetries(f, fastOptions(&l)).GetBlob(t.Context(), digest.FromBytes(data))
	_, err = io.ReadAll(rc)
	if err == nil || !strings.Contains(err.Error(), "gave up after 5 attempts") || len(f.offsets) != 5 {
		t.Fatalf("err %v after %d opens", err, len(f.offsets))
	}
}

func TestPutBlobRewinds(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	f := &fakeStore{fail: func(op string, n int) error {
		if n == 1 {
			return fmt.Errorf("write tcp: %w", syscall.EPIPE)
		}
		return nil
	}}
	var l logLines
	st := WithRetries(f, fastOptions(&l))
	if err := st.PutBlob(t.Context(), digest.FromBytes(data), int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if len(f.puts) != 2 || !bytes.Equal(f.puts[1], data) {
		t.Fatalf("%d puts; the second got %d bytes, want all %d", len(f.puts), len(f.puts[len(f.puts)-1]), len(data))
	}
	// A reader that cannot be rewound gets one attempt.
	f.calls = nil
	f.puts = nil
	err := st.PutBlob(t.Context(), digest.FromBytes(data), int64(len(data)), io.MultiReader(bytes.NewReader(data)))
	if err == nil || f.count("putblob") != 1 {
		t.Fatalf("err %v after %d attempts, want a failure after 1", err, f.count("putblob"))
	}
}

func TestStallCutsARequest(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/headers":
			<-release
		case "/body":
			w.Header().Set("Content-Length", "2000")
			w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			<-release
		case "/upload":
			<-release // reads nothing: the client's writes block
		case "/slow-reader":
			w.Write(make([]byte, 3000))
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	client := &http.Client{Transport: WatchTransport(nil, 300*time.Millisecond)}
	check := func(name string, err error, start time.Time) {
		t.Helper()
		var se *StallError
		if !errors.As(err, &se) || !errors.Is(err, ErrStalled) {
			t.Fatalf("%s: err = %v, want a stall", name, err)
		}
		if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
			t.Fatalf("%s: cut after %v, want 300 ms", name, d)
		}
	}
	start := time.Now()
	_, err := client.Get(srv.URL + "/headers")
	check("waiting for headers", err, start)

	start = time.Now()
	resp, err := client.Get(srv.URL + "/body")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	check("reading the body", err, start)

	start = time.Now()
	_, err = client.Post(srv.URL+"/upload", "application/octet-stream", io.LimitReader(zeros{}, 64<<20))
	check("sending the body", err, start)

	// A slow reader is not a stall: only time waiting on the network counts.
	resp, err = client.Get(srv.URL + "/slow-reader")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	for {
		time.Sleep(400 * time.Millisecond)
		if _, err = resp.Body.Read(buf); err != nil {
			break
		}
	}
	resp.Body.Close()
	if err != io.EOF {
		t.Fatalf("slow reader: %v, want EOF", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"": 0, "7": 7 * time.Second, "-1": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestUnansweredRequestAfterA404: an upload that first checks the blob
// (404: absent) and then loses its connection is retried: the 404 answered
// the check, not the upload.
func TestUnansweredRequestAfterA404(t *testing.T) {
	var resets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if resets.Add(1) == 1 {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	var l logLines
	st := WithRetries(&checkThenPutStore{url: srv.URL}, fastOptions(&l))
	data := []byte("blob")
	if err := st.PutBlob(t.Context(), digest.FromBytes(data), 4, bytes.NewReader(data)); err != nil {
		t.Fatalf("PutBlob after a reset: %v", err)
	}
	if resets.Load() != 2 || len(l.get()) != 1 {
		t.Fatalf("%d uploads, log %q; want 2 and one retry line", resets.Load(), l.get())
	}
}

// checkThenPutStore puts a blob as ggcr does: a HEAD, then the upload.
type checkThenPutStore struct {
	fakeStore
	url string
}

func (s *checkThenPutStore) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	client := &http.Client{Transport: WatchTransport(nil, 2*time.Second)}
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, s.url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, s.url, r)
	resp, err = client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("answered %d", resp.StatusCode)
	}
	return nil
}

// TestRetryNotify: each retry of an operation run with a notifying context
// is reported, with its reason; other contexts report nothing.
func TestRetryNotify(t *testing.T) {
	f := &fakeStore{fail: resetTwice}
	var l logLines
	st := WithRetries(f, fastOptions(&l))
	var whys []string
	ctx := WithRetryNotify(t.Context(), func(why string) { whys = append(whys, why) })
	if _, err := st.StatBlob(ctx, digest.FromBytes(nil)); err != nil {
		t.Fatal(err)
	}
	if len(whys) != 2 || whys[0] != "connection reset" {
		t.Errorf("notified %q, want 2 connection resets", whys)
	}
	whys = nil
	if _, err := st.StatBlob(t.Context(), digest.FromBytes(nil)); err != nil {
		t.Fatal(err)
	}
	if len(whys) != 0 {
		t.Errorf("a context without the hook notified %q", whys)
	}
}
