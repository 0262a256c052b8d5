package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/store"
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
	} {
		// A misconfiguration exits 2.
		wantExit(t, tc.args, 2, tc.says)
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
