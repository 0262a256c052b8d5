package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// start runs cache-serve with args until the returned cancel (a SIGTERM)
// and returns its URL and the error it ends with.
func start(t *testing.T, args ...string) (url string, cancel func(), done <-chan error, logs *testserver.SyncBuffer) {
	t.Helper()
	ctx, cancelCtx := context.WithCancel(context.Background())
	t.Cleanup(cancelCtx)
	addr := make(chan string, 1)
	logs = &testserver.SyncBuffer{}
	cmd := newCommand(logs, func(a string) { addr <- a })
	cmd.SetArgs(append([]string{"--listen", "127.0.0.1:0"}, args...))
	errc := make(chan error, 1)
	go func() { errc <- cmd.ExecuteContext(ctx) }()
	select {
	case a := <-addr:
		return "http://" + a, cancelCtx, errc, logs
	case err := <-errc:
		t.Fatalf("cache-serve %v: %v\n%s", args, err, logs)
	}
	return "", nil, nil, nil
}

// TestGracefulShutdown: a SIGTERM while a blob is being uploaded lets
// the upload finish and be kept; then the server stops.
func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CACHE_ALLOW_UNAUTHENTICATED_WRITES", "true") // flags come from CACHE_* too
	base, sigterm, done, logs := start(t, "--store", "file://"+dir)

	resp, err := http.Get(base + httpapi.HealthPath)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v, %v", resp, err)
	}
	resp.Body.Close()

	data := bytes.Repeat([]byte("cache "), 200_000)
	d := digest.FromBytes(data)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", base+httpapi.BlobsPath+d.Hex(), pr)
	req.ContentLength = int64(len(data))
	answer := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("PUT: %v", err)
		}
		answer <- resp
	}()
	pw.Write(data[:len(data)/2])
	// The half sent may sit in the kernel's buffers before the server has
	// accepted the connection (a shutdown then drops it unseen): wait
	// until the server is reading the body into a staged blob.
	for i := 0; ; i++ {
		if staged, _ := filepath.Glob(filepath.Join(dir, "v1", "staging", ".tmp-*")); len(staged) > 0 {
			break
		}
		if i == 2000 {
			t.Fatal("the server never began to stage the upload")
		}
		time.Sleep(5 * time.Millisecond)
	}
	sigterm()
	// Shutdown has begun once the log says so; the upload goes on.
	for !strings.Contains(logs.String(), "stopping") {
		select {
		case err := <-done:
			t.Fatalf("the server ended before the upload did: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	pw.Write(data[len(data)/2:])
	pw.Close()
	if resp := <-answer; resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("the upload in flight at SIGTERM got %v, want 201", resp)
	}
	if err := <-done; err != nil {
		t.Fatalf("cache-serve ended with %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, store.BlobName(d))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the blob uploaded during shutdown: %d bytes, %v", len(got), err)
	}
	if _, err := http.Get(base + httpapi.HealthPath); err == nil {
		t.Fatal("the server still answers after it stopped")
	}
}

// TestFlags: a tokens file is read; mistakes stop the server with one line.
func TestFlags(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	os.WriteFile(tokens, fmt.Appendf(nil, "tokens:\n  - {name: ci, sha256: %s, write: main}\n", digest.FromBytes([]byte("tok")).Hex()), 0o600)
	base, sigterm, done, _ := start(t, "--store", "file://"+t.TempDir(), "--tokens-file", tokens, "--max-body-size", "1KiB")
	req, _ := http.NewRequest("PUT", base+httpapi.BlobsPath+digest.FromBytes(make([]byte, 2000)).Hex(), bytes.NewReader(make([]byte, 2000)))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a blob over --max-body-size: %v, %v", resp, err)
	}
	resp.Body.Close()
	sigterm()
	<-done

	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--tls-cert", "x.pem"}, "go together"},
		{[]string{"--tokens-file", "/no/such/file"}, "reading the tokens file"},
		{[]string{"--store", "nope"}, "no scheme"},
		{[]string{"--anonymous-scope", "Bad.Scope", "--store", "file://" + t.TempDir()}, "invalid scope"},
		{[]string{"--gc-grace", "-1s", "--store", "file://" + t.TempDir()}, "must not be negative"},
		{[]string{"--ttl", "soon", "--store", "file://" + t.TempDir()}, "not a duration"},
		{[]string{"--no-such-flag"}, "unknown flag"},
		{[]string{"serve"}, "unknown command"},
		{[]string{"--gha-signing-key-file", "/dev/null", "--store", "file://" + t.TempDir()}, "use at least 32"},
		{[]string{"--gha-signing-key-file", "/no/such/key", "--store", "file://" + t.TempDir()}, "--gha-signing-key-file"},
		{[]string{"--gha-token-ttl", "0s", "--store", "file://" + t.TempDir()}, "must be positive"},
	} {
		// A misconfiguration exits 2.
		wantExit(t, tc.args, 2, tc.says)
	}
}

// TestGHAFlag: the GitHub Actions cache is on by default, gives a token
// to an anonymous writer where it may write, and --gha=false takes its
// routes away.
func TestGHAFlag(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{true, false} {
		base, sigterm, done, _ := start(t, "--store", "file://"+t.TempDir(), "--allow-unauthenticated-writes", "--gha-signing-key-file", key, fmt.Sprintf("--gha=%v", on))
		resp, err := http.Post(base+"/v1/gha/token", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if on && (resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"token":"ey`)) || !on && resp.StatusCode != http.StatusNotFound {
			t.Errorf("--gha=%v: POST /v1/gha/token = %d %s", on, resp.StatusCode, body)
		}
		sigterm()
		<-done
	}
}

// wantExit runs cache-serve with args and checks that it ends with the
// exit code code and an error saying says.
func wantExit(t *testing.T, args []string, code int, says string) {
	t.Helper()
	cmd := newCommand(io.Discard, nil)
	cmd.SetArgs(append([]string{"--listen", "127.0.0.1:0"}, args...))
	err := cmd.ExecuteContext(t.Context())
	if err == nil || !strings.Contains(err.Error(), says) || exitCode(err) != code || strings.Contains(err.Error(), "\n") {
		t.Errorf("cache-serve %v: %v (exit %d), want exit %d and one line saying %q", args, err, exitCode(err), code, says)
	}
}

// TestEviction: the GC flags evict at start an entry unused past --ttl,
// keep a fresh one, and a restore through the server leaves its last-use
// record in the store.
func TestEviction(t *testing.T) {
	dir := t.TempDir()
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewObjectStore(b)
	old := storetest.NewRef(t, st, "default.old", time.Now().Add(-30*24*time.Hour), 1)
	fresh := storetest.NewRef(t, st, "default.fresh", time.Now(), 1)
	for _, r := range []*store.Ref{old, fresh} {
		if err := st.PutRef(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	base, sigterm, done, logs := start(t, "--store", "file://"+dir, "--allow-unauthenticated-reads", "--ttl", "7d", "--gc-interval", "1h")
	for i := 0; !strings.Contains(logs.String(), "gc: evicted 1 entries"); i++ {
		if i == 2000 {
			t.Fatalf("no eviction at start:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get(base + httpapi.RefsPath + "fresh")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET fresh: %v, %v", resp, err)
	}
	resp.Body.Close()
	if resp, _ := http.Get(base + httpapi.RefsPath + "old"); resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET old after its eviction: %v", resp)
	}
	sigterm()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	uses, err := gc.ReadUses(t.Context(), st, []*store.Ref{fresh}, time.Now())
	if err != nil || uses[fresh.Key].IsZero() {
		t.Fatalf("no last-use record of %s after a restore: %v %v", fresh.Key, uses, err)
	}
}

// TestUploadLimitRetries: saves through an http:// store against a server
// with --max-concurrent-uploads 1 all succeed: the uploads over the limit
// get 429 with Retry-After, which the client's retries honour; the server
// counts the 429s in /metrics.
func TestUploadLimitRetries(t *testing.T) {
	dir := t.TempDir()
	base, sigterm, done, _ := start(t, "--store", "file://"+dir, "--allow-unauthenticated-writes", "--max-concurrent-uploads", "1")
	metrics := func() testserver.Metrics { return testserver.Scrape(t, base+server.MetricsPath) }

	// An upload that holds the one slot until the saves have been refused.
	held := bytes.Repeat([]byte("held "), 100_000)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", base+httpapi.BlobsPath+digest.FromBytes(held).Hex(), pr)
	req.ContentLength = int64(len(held))
	heldDone := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			heldDone <- 0
			return
		}
		resp.Body.Close()
		heldDone <- resp.StatusCode
	}()
	pw.Write(held[:1000])
	waitFor(t, "the held upload takes the slot", func() bool { return metrics()["tekton_cache_uploads_in_flight"] == 1 })

	var retries testserver.SyncBuffer
	st, err := all.Mux().Open(t.Context(), base, store.Options{Retries: 40, Logf: func(f string, a ...any) { fmt.Fprintf(&retries, f+"\n", a...) }})
	if err != nil {
		t.Fatal(err)
	}
	const savers = 3
	errs := make(chan error, savers)
	for i := range savers {
		src := filepath.Join(t.TempDir(), "src")
		os.Mkdir(src, 0o755)
		for j := range 3 {
			data := make([]byte, 600_000)
			rand.Read(data)
			os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", j)), data, 0o644)
		}
		go func() {
			_, err := engine.Save(t.Context(), st, engine.SaveOptions{Key: fmt.Sprintf("go-%d", i), Folders: []string{src}, PackSize: 1 << 20})
			errs <- err
		}()
	}
	waitFor(t, "a save is refused with 429", func() bool { return metrics()["tekton_cache_uploads_throttled_total"] >= 1 })
	pw.Write(held[1000:])
	pw.Close()
	if code := <-heldDone; code != http.StatusCreated {
		t.Fatalf("the held upload: %d", code)
	}
	for range savers {
		if err := <-errs; err != nil {
			t.Fatalf("a save against the upload limit failed: %v\n%s", err, retries.String())
		}
	}
	for i := range savers {
		if _, err := st.GetRef(t.Context(), fmt.Sprintf("go-%d", i)); err != nil {
			t.Fatalf("entry go-%d: %v", i, err)
		}
	}
	m := metrics()
	throttled := m["tekton_cache_uploads_throttled_total"]
	if answered := m[`tekton_cache_http_requests_total{code="429",method="PUT",route="/v1/blobs/sha256/{hex}"}`]; throttled < 1 || answered != throttled {
		t.Fatalf("429s: %v counted as throttled, %v answered", throttled, answered)
	}
	if !strings.Contains(retries.String(), "HTTP 429") {
		t.Fatalf("the client never retried a 429:\n%s", retries.String())
	}
	t.Logf("%v uploads refused with 429 and retried", throttled)
	sigterm()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond, failing after many tries: the test depends on the
// bound not being reached, not on speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i == 3000 {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOperatingFlags: /metrics is served without a token unless
// --metrics=false; --log-format text writes key=value lines, json JSON
// lines; another format is refused in one line.
func TestOperatingFlags(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	os.WriteFile(tokens, fmt.Appendf(nil, "tokens:\n  - {name: ci, sha256: %s, write: main}\n", digest.FromBytes([]byte("tok-7f3a9c")).Hex()), 0o600)
	for _, tc := range []struct {
		args       []string
		metrics    int
		logsPrefix string
		principal  string
	}{
		{nil, http.StatusOK, `{"time":`, `"principal":"ci"`},
		{[]string{"--metrics=false", "--log-format", "text"}, http.StatusNotFound, "time=", "principal=ci "},
	} {
		base, sigterm, done, logs := start(t, append([]string{"--store", "file://" + t.TempDir(), "--tokens-file", tokens}, tc.args...)...)
		resp, err := http.Get(base + server.MetricsPath)
		if err != nil || resp.StatusCode != tc.metrics {
			t.Fatalf("%v: GET /metrics without a token: %v, %v; want %d", tc.args, resp, err, tc.metrics)
		}
		resp.Body.Close()
		req, _ := http.NewRequest("GET", base+httpapi.RefsPath+"go-1", nil)
		req.Header.Set("Authorization", "Bearer tok-7f3a9c")
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%v: GET a missing ref: %v, %v", tc.args, resp, err)
		} else {
			resp.Body.Close()
		}
		sigterm()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		text := logs.String()
		for l := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
			if !strings.HasPrefix(l, tc.logsPrefix) {
				t.Errorf("%v: a log line not in its format: %q", tc.args, l)
			}
		}
		if !strings.Contains(text, tc.principal) || strings.Contains(text, "tok-7f3a9c") || strings.Contains(text, "Bearer") {
			t.Errorf("%v: the request's line (principal ci, no token) is not in the logs:\n%s", tc.args, text)
		}
	}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--log-format", "xml"}, `--log-format "xml": use json or text`},
		{[]string{"--max-concurrent-uploads", "-1", "--store", "file://" + t.TempDir()}, "must not be negative"},
	} {
		cmd := newCommand(io.Discard, nil)
		cmd.SetArgs(append([]string{"--listen", "127.0.0.1:0"}, tc.args...))
		if err := cmd.ExecuteContext(t.Context()); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("cache-serve %v: %v, want %q", tc.args, err, tc.says)
		}
	}
}

// TestStatusPageFlag: the status page is on by default, shows the GC's
// policy (the collector is wired to it), and --status-page=false turns
// GET / into a 404.
func TestStatusPageFlag(t *testing.T) {
	dir := t.TempDir()
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewObjectStore(b)
	if err := st.PutRef(t.Context(), storetest.NewRef(t, st, "default.go-linux-0123456789abcdef", time.Now(), 1)); err != nil {
		t.Fatal(err)
	}
	get := func(base string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, tc := range []struct {
		flag string
		want int
	}{{"", http.StatusOK}, {"--status-page=false", http.StatusNotFound}} {
		args := []string{"--store", "file://" + dir, "--max-size", "1GiB"}
		if tc.flag != "" {
			args = append(args, tc.flag)
		}
		base, sigterm, done, logs := start(t, args...)
		status, body := get(base)
		if status != tc.want {
			t.Errorf("%v: GET /: %d, want %d\n%s", args, status, tc.want, logs)
		}
		if tc.want == http.StatusOK && (!strings.Contains(body, "go-linux-0123456789abcdef") || !strings.Contains(body, "unused for more than 7d") || !strings.Contains(body, "while over 1.0 GiB")) {
			t.Errorf("the page lacks the entry or the GC's policy:\n%s", body)
		}
		sigterm()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
