package main

// Fault tests of issue 17 with several replicas over one MinIO bucket:
// concurrent writers of one key through two cache-serve instances, and two
// replicas' GCs (one lease) while restores and saves go on.

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
	"github.com/tekton-cache/tekton-cache/internal/store/httpstore"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// minioStore starts MinIO with a bucket and returns the s3:// URL of a new
// prefix in it; clients of the servers send no token.
func minioStore(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts MinIO: not with -short")
	}
	t.Setenv(httpstore.TokenEnv, "")
	t.Setenv(httpstore.TokenFileEnv, "")
	return testserver.MinIOBucket(t, "tcserveminio", "tc-serve-minio-secret-8e1d", "serve")(storetest.NewPrefix())
}

// openStore opens raw as `cache` does (retries, checked reads).
func openStore(t *testing.T, raw string) store.Store {
	t.Helper()
	st, err := all.Mux().Open(t.Context(), raw, store.Options{RetryDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("opening %s: %v", raw, err)
	}
	return st
}

// tree makes a new test tree (random content, so unlike any other) and
// returns its folder and snapshot.
func tree(t *testing.T) (string, map[string]testtree.Entry) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testtree.Make(t, dir)
	return dir, testtree.Snapshot(t, dir)
}

func save(ctx context.Context, t *testing.T, st store.Store, key, dir string) error {
	_, err := engine.Save(ctx, st, engine.SaveOptions{Key: key, Folders: []string{dir}, PackSize: 1 << 20, Logf: t.Logf})
	return err
}

// restore restores key from st into a new folder: whether it restored,
// and the restored tree.
func restore(ctx context.Context, t *testing.T, st store.Store, key string) (bool, map[string]testtree.Entry, error) {
	dst := filepath.Join(t.TempDir(), "restored")
	r, err := engine.Restore(ctx, st, engine.RestoreOptions{Key: key, Folders: []string{dst}, Logf: t.Logf})
	if err != nil || !r.Restored {
		return false, nil, err
	}
	got, err := testtree.Read(dst, archive.StateFileName)
	testtree.Chmod(t, dst)
	os.RemoveAll(dst) // restores run by the hundred
	return true, got, err
}

var status5xx = regexp.MustCompile(`: 5\d\d [a-z_]+: `)

// serverErrors are the lines of a server's log that report a failed
// request other than a client's mistake (5xx: the store failed).
func serverErrors(logs string) []string {
	var bad []string
	for _, l := range strings.Split(logs, "\n") {
		if status5xx.MatchString(l) || strings.Contains(l, "panic") {
			bad = append(bad, l)
		}
	}
	return bad
}

// TestConcurrentRefWritersTwoReplicas: clients save different trees under
// one key at the same moment through two cache-serve instances over one
// bucket; every save succeeds, both replicas then answer the same ref, and
// it restores to exactly one of the trees saved.
func TestConcurrentRefWritersTwoReplicas(t *testing.T) {
	raw := minioStore(t)
	args := []string{"--store", raw, "--allow-unauthenticated-reads", "--allow-unauthenticated-writes", "--gc-interval", "0"}
	var urls []string
	var logs []*testserver.SyncBuffer
	for range 2 {
		u, stop, done, l := start(t, args...)
		t.Cleanup(func() { stop(); <-done })
		urls, logs = append(urls, u), append(logs, l)
	}
	const n = 8
	dirs := make([]string, n)
	want := make([]map[string]testtree.Entry, n)
	for i := range n {
		dirs[i], want[i] = tree(t)
	}
	clients := []store.Store{openStore(t, urls[0]), openStore(t, urls[1])}
	var wg sync.WaitGroup
	begin := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-begin
			errs[i] = save(t.Context(), t, clients[i%2], "go-raced", dirs[i])
		})
	}
	close(begin)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("save %d through replica %d: %v", i, i%2+1, err)
		}
	}
	refA, errA := clients[0].GetRef(t.Context(), "go-raced")
	refB, errB := clients[1].GetRef(t.Context(), "go-raced")
	if errA != nil || errB != nil || refA.Index != refB.Index {
		t.Fatalf("the replicas answer %v (%v) and %v (%v), want one ref", refA, errA, refB, errB)
	}
	for r, st := range clients {
		ok, got, err := restore(t.Context(), t, st, "go-raced")
		if !ok || err != nil {
			t.Fatalf("restore through replica %d: %v, %v", r+1, ok, err)
		}
		matches := 0
		for i := range n {
			if len(testtree.Diff(want[i], got)) == 0 {
				matches++
			}
		}
		if matches != 1 {
			t.Fatalf("the restore through replica %d equals %d of the %d trees saved, want exactly 1", r+1, matches, n)
		}
	}
	for r, l := range logs {
		if bad := serverErrors(l.String()); len(bad) > 0 {
			t.Errorf("replica %d logged failures: %v", r+1, bad)
		}
	}
}

// replica is a server and its collector over its own client of the bucket.
type replica struct {
	client store.Store // the http:// store of the server
	gc     *server.Collector
	logs   testserver.SyncBuffer
}

func newReplica(t *testing.T, raw, holder string, clk *testserver.Clock, o server.CollectorOptions) *replica {
	t.Helper()
	r := &replica{}
	st := openStore(t, raw)
	srv, err := server.New(st, server.Options{AllowUnauthenticatedReads: true, AllowUnauthenticatedWrites: true, Now: clk.Now,
		Logf: func(f string, a ...any) { fmt.Fprintf(&r.logs, f+"\n", a...) }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	o.Holder, o.Now, o.Logf = holder, clk.Now, t.Logf
	if r.gc, err = server.NewCollector(st, o); err != nil {
		t.Fatal(err)
	}
	r.client = openStore(t, ts.URL)
	return r
}

// TestTwoReplicasOneBucketGC: two replicas over one MinIO bucket; an
// entry saved through one restores through the other. Then, while clients
// restore and save through both, both replicas try to collect at every
// step of an injected clock (a lease period apart): exactly one collects
// each time, each of them in turn, the size rule evicts entries and the
// sweep removes their blobs, and no restore ever gets a tree other than
// the one saved under its key (a restore of an entry evicted under it
// fails, or misses).
func TestTwoReplicasOneBucketGC(t *testing.T) {
	raw := minioStore(t)
	clk := testserver.NewClock(time.Now())
	start := clk.Now()
	// About two entries fit (a test tree is about 3.2 MB): every run evicts.
	o := server.CollectorOptions{TTL: 30 * 24 * time.Hour, MaxSize: 7 << 20, Grace: time.Hour, Interval: time.Hour}
	reps := []*replica{newReplica(t, raw, "replica-1", clk, o), newReplica(t, raw, "replica-2", clk, o)}
	ctx := t.Context()

	var mu sync.Mutex
	saved := map[string]map[string]testtree.Entry{} // key -> the tree saved under it
	dir, snap := tree(t)
	if err := save(ctx, t, reps[0].client, "go-0", dir); err != nil {
		t.Fatalf("save through replica 1: %v", err)
	}
	saved["go-0"] = snap
	if ok, got, err := restore(ctx, t, reps[1].client, "go-0"); !ok || err != nil || len(testtree.Diff(snap, got)) != 0 {
		t.Fatalf("restore through replica 2 of a save through replica 1: %v, %v, %v", ok, err, testtree.Diff(snap, got))
	}

	// Clients: one saves new entries through each replica in turn, two
	// restore the entries saved so far through both.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { close(stop) })
	defer func() { halt(); wg.Wait() }() // a failed step stops the clients too
	var restored, failed, wrong atomic.Int64
	var saves atomic.Int64
	wg.Go(func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("go-%d", i)
			dir, snap := tree(t)
			if err := save(ctx, t, reps[i%2].client, key, dir); err != nil {
				t.Errorf("save %s through replica %d: %v", key, i%2+1, err)
				return
			}
			mu.Lock()
			saved[key] = snap
			mu.Unlock()
			saves.Add(1)
		}
	})
	for c := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				key := fmt.Sprintf("go-%d", (i*7+c)%len(saved))
				want := saved[key]
				mu.Unlock()
				ok, got, err := restore(ctx, t, reps[(i+c)%2].client, key)
				switch {
				case ok && err == nil && len(testtree.Diff(want, got)) == 0:
					restored.Add(1)
				case ok:
					wrong.Add(1)
					t.Errorf("restore of %s: %v, %v", key, err, testtree.Diff(want, got))
				default:
					failed.Add(1) // evicted, or its blobs swept under it
				}
			}
		})
	}

	const steps = 8
	var evicted, swept int
	ran := [2]int{}
	for step := 1; step <= steps; step++ {
		// Let the clients work between runs.
		for i, s := 0, saves.Load(); saves.Load() < s+1 && i < 6000; i++ {
			time.Sleep(5 * time.Millisecond)
		}
		clk.Set(start.Add(time.Duration(step) * (time.Hour + time.Minute)))
		first := step % 2 // each replica tries first in turn
		n := 0
		for _, r := range []int{first, 1 - first} {
			res, didRun, err := reps[r].gc.RunOnce(ctx)
			if err != nil {
				t.Fatalf("step %d: replica %d's GC: %v", step, r+1, err)
			}
			if didRun {
				n++
				ran[r]++
				evicted += len(res.Removed)
				swept += len(res.Blobs.Deleted)
			}
		}
		if n != 1 {
			t.Fatalf("step %d: %d replicas collected, want 1", step, n)
		}
	}
	halt()
	wg.Wait()
	t.Logf("GC runs %v, %d entries evicted, %d blobs swept; %d saves, %d restores right, %d failed or missed", ran, evicted, swept, saves.Load(), restored.Load(), failed.Load())
	if ran[0] == 0 || ran[1] == 0 || evicted == 0 || swept == 0 || restored.Load() == 0 {
		t.Fatalf("the test did not exercise what it is for: runs %v, %d evicted, %d swept, %d restores", ran, evicted, swept, restored.Load())
	}
	if wrong.Load() != 0 {
		t.Fatalf("%d restores gave a tree other than the one saved", wrong.Load())
	}
	for r, rep := range reps {
		if bad := serverErrors(rep.logs.String()); len(bad) > 0 {
			t.Errorf("replica %d logged failures: %v", r+1, bad)
		}
	}
}
