// Package ghatest runs a real cache-serve (the native API and the GitHub
// Actions front end, on 127.0.0.1) for tests, and drives it with
// go-actions-cache exactly as BuildKit's type=gha cache does. The body is
// shared by this module's test (the newest go-actions-cache) and the
// nested module test/ghacompat (the version BuildKit v0.32 vendors).
package ghatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	actionscache "github.com/tonistiigi/go-actions-cache"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/server/gha"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Env is a running server with the GHA front end.
type Env struct {
	URL     string
	Server  *server.Server
	Handler *gha.Handler
	Service *gha.Service
}

// Options tune Start.
type Options struct {
	Server  server.Options
	Service gha.ServiceOptions
	GHA     gha.Options
}

// Start serves st on a free 127.0.0.1 port until the test ends.
func Start(t testing.TB, st store.Store, o Options) *Env {
	t.Helper()
	o.Server.InternalRef, o.Server.NameRef = gha.Internal, gha.NameRef // as cache-serve does
	srv, err := server.New(st, o.Server)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := gha.NewService(st, o.Service)
	if err != nil {
		t.Fatal(err)
	}
	if o.GHA.SigningKey == nil {
		o.GHA.SigningKey = make([]byte, 32)
		rand.Read(o.GHA.SigningKey)
	}
	o.GHA.Authenticate = srv.Authenticate
	o.GHA.RecordUse = srv.RecordUse
	o.GHA.ObserveLookup = srv.ObserveGHALookup
	h, err := gha.New(svc, o.GHA)
	if err != nil {
		t.Fatal(err)
	}
	h.Register(srv)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &Env{URL: hs.URL, Server: srv, Handler: h, Service: svc}
}

// Token is a runtime token of a principal that writes write and reads read.
func (e *Env) Token(t testing.TB, write string, read ...string) string {
	t.Helper()
	tok, _, err := e.Handler.MintToken(&server.Principal{Name: "test-" + write, Write: write, Read: read})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Client is a go-actions-cache client of the server, protocol v1 or v2.
func (e *Env) Client(t testing.TB, token string, v2 bool) *actionscache.Cache {
	t.Helper()
	c, err := actionscache.New(token, e.URL+"/", v2, actionscache.Opt{Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Load loads key, which must be there, and returns its entry and bytes
// (WriteTo).
func Load(t testing.TB, c *actionscache.Cache, key string) (*actionscache.Entry, []byte) {
	t.Helper()
	ctx := context.Background()
	e, err := c.Load(ctx, key)
	if err != nil || e == nil {
		t.Fatalf("Load(%s) = %v, %v; want an entry", key, e, err)
	}
	var buf bytes.Buffer
	if err := e.WriteTo(ctx, &buf); err != nil {
		t.Fatalf("WriteTo of %s: %v", key, err)
	}
	return e, buf.Bytes()
}

// RunBuildKit makes BuildKit's calls, for protocol v1 and v2: a Load of a
// missing blob, Saves of a small blob and one over 3 MiB (v2: Put Block and
// Put Block List; v1: chunks sent 4 at once, out of order), ranged reads
// at non-zero offsets, WriteTo, SaveMutable of an index twice in sequence
// (#1, then #2) and from two goroutines at once (one sees "already
// exists", waits and retries: #3 and #4).
func RunBuildKit(t *testing.T, newStore func(t *testing.T) store.Store) {
	old := actionscache.UploadChunkSize
	actionscache.UploadChunkSize = 1 << 20 // 4 chunks of the big blob in flight at once
	t.Cleanup(func() { actionscache.UploadChunkSize = old })
	for _, v2 := range []bool{false, true} {
		name := "v1"
		if v2 {
			name = "v2"
		}
		t.Run(name, func(t *testing.T) {
			env := Start(t, newStore(t), Options{})
			c := env.Client(t, env.Token(t, "main", "main"), v2)
			if got := c.Scopes(); len(got) != 1 || got[0].Scope != "main" || got[0].Permission != 3 {
				t.Fatalf("token scopes = %+v, want main read+write", got)
			}
			ctx := context.Background()
			small, big := random(t, 100), random(t, 3<<20+12345)
			keyOf := func(b []byte) string { return "buildkit-blob-1-" + string(digest.FromBytes(b)) }
			if e, err := c.Load(ctx, keyOf(small)); err != nil || e != nil {
				t.Fatalf("Load of a missing blob = %v, %v; want a miss", e, err)
			}
			for _, b := range [][]byte{small, big} {
				if err := c.Save(ctx, keyOf(b), actionscache.NewBlob(b)); err != nil {
					t.Fatalf("Save of %d bytes: %v", len(b), err)
				}
				e, got := Load(t, c, keyOf(b))
				if e.Key != keyOf(b) || !bytes.Equal(got, b) {
					t.Fatalf("Load(%s): key %s, %d bytes; want the %d bytes saved", keyOf(b), e.Key, len(got), len(b))
				}
			}
			e, _ := Load(t, c, keyOf(big))
			ra := e.Download(ctx)
			for _, off := range []int64{3 << 20, 1, 1 << 20, int64(len(big)) - 10} {
				p := make([]byte, 10)
				if n, err := ra.ReadAt(p, off); n != len(p) || !bytes.Equal(p, big[off:off+10]) {
					t.Fatalf("ReadAt(%d) = %d, %v: %x, want %x", off, n, err, p[:n], big[off:off+10])
				}
			}
			ra.Close()
			if err := c.Save(ctx, keyOf(small), actionscache.NewBlob(small)); err == nil {
				t.Fatalf("a second Save of %s succeeded; want already exists", keyOf(small))
			}

			index := "index-buildkit-1-0123abcd"
			for i, content := range []string{"first", "second"} {
				err := c.SaveMutable(ctx, index, 15*time.Second, func(old *actionscache.Entry) (actionscache.Blob, error) {
					if i == 0 && old != nil || i == 1 && (old == nil || old.Key != index+"#1") {
						t.Errorf("SaveMutable %d: old = %+v", i, old)
					}
					return actionscache.NewBlob([]byte(content)), nil
				})
				if err != nil {
					t.Fatalf("SaveMutable %d: %v", i, err)
				}
			}
			if e, got := Load(t, c, index+"#"); e.Key != index+"#2" || string(got) != "second" {
				t.Fatalf("Load(%s#) = %s %q, want %s#2 \"second\"", index, e.Key, got, index)
			}

			// Two at once: both read #2 and reserve #3; one wins, the other
			// is told it exists, waits 2 s, reads #3 and saves #4.
			var mu sync.Mutex
			calls := 0
			var barrier sync.WaitGroup
			barrier.Add(2)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for g := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					first := true
					errs[g] = c.SaveMutable(ctx, index, 15*time.Second, func(old *actionscache.Entry) (actionscache.Blob, error) {
						mu.Lock()
						calls++
						mu.Unlock()
						if first {
							first = false
							barrier.Done()
							barrier.Wait()
						}
						return actionscache.NewBlob([]byte("concurrent")), nil
					})
				}()
			}
			wg.Wait()
			if errs[0] != nil || errs[1] != nil {
				t.Fatalf("concurrent SaveMutable: %v, %v", errs[0], errs[1])
			}
			if calls < 3 {
				t.Fatalf("concurrent SaveMutable called back %d times; want 3 or more (one saw already exists and retried)", calls)
			}
			if e, _ := Load(t, c, index+"#"); e.Key != index+"#4" {
				t.Fatalf("after two concurrent SaveMutable, Load(%s#) = %s; want #4", index, e.Key)
			}
			Load(t, c, index+"#3")
		})
	}
}
