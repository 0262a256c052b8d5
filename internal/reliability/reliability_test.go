package reliability_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	storagev1 "google.golang.org/api/storage/v1"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// Test settings: short stalls and backoffs keep the whole matrix at a few
// seconds per store.
const (
	stallTimeout = time.Second
	retryDelay   = 20 * time.Millisecond
	retries      = store.DefaultRetries
	// opTimeout is the whole operation's deadline, far above the bounds
	// the stall timeout and the retries set: a test that reaches it hung.
	opTimeout = 60 * time.Second
	// bound is the most any faulted operation may take: every attempt
	// stalled, the backoffs, one Retry-After of 1 s, and slack for a busy
	// machine running -race.
	bound    = (retries+1)*stallTimeout + time.Second + 8*time.Second
	packSize = 64 << 10
)

// backend is a store behind the proxy, and how its requests look at each
// phase (regular expressions over path and unescaped query).
type backend struct {
	name string
	// open starts the server behind p and returns the store URL, through p.
	open     func(t *testing.T, p *faultproxy.Proxy) string
	insecure bool
	// Request patterns, per phase.
	refGet  func(key string) (method, path string)
	blobGet func(hex string) (method, path string)
	blobPut func() (method, path string)
	refPut  func(key string) (method, path string)
}

func backends() []backend {
	objectPaths := func(b *backend) {
		b.refGet = func(key string) (string, string) { return "GET", `v1/refs/` + key + `(\?|$)` }
		b.blobGet = func(hex string) (string, string) { return "GET", `v1/blobs/sha256/` + hex + `(\?|$)` }
		b.blobPut = func() (string, string) { return "PUT", `v1/blobs/sha256/` }
		b.refPut = func(key string) (string, string) { return "PUT", `v1/refs/` + key + `(\?|$)` }
	}
	oci := backend{name: "OCI registry (distribution)", insecure: true, open: openOCI,
		refGet:  func(key string) (string, string) { return "GET", `/manifests/` + key + `$` },
		blobGet: func(hex string) (string, string) { return "GET", `/blobs/sha256:` + hex + `$` },
		blobPut: func() (string, string) { return "", `/blobs/uploads/` },
		refPut:  func(key string) (string, string) { return "PUT", `/manifests/` + key + `$` },
	}
	s3b := backend{name: "S3 (MinIO)", open: openS3}
	objectPaths(&s3b)
	gcs := backend{name: "GCS (fake-gcs-server)", open: openGCS}
	objectPaths(&gcs)
	// GCS uploads are POSTs that name the object in the query.
	gcs.blobPut = func() (string, string) { return "POST", `^/upload/.*v1/blobs/sha256/` }
	gcs.refPut = func(key string) (string, string) { return "POST", `^/upload/.*v1/refs/` + key + `(&|$)` }
	az := backend{name: "Azure Blob (Azurite)", open: openAzure}
	objectPaths(&az)
	return []backend{oci, s3b, gcs, az}
}

func openOCI(t *testing.T, p *faultproxy.Proxy) string {
	p.SetTarget("http://" + testserver.Registry(t, "", ""))
	return "oci://" + p.Addr() + "/cache/reliability"
}

const bucket = "reliability"

func openS3(t *testing.T, p *faultproxy.Proxy) string {
	user, secret := "relminio", "rel-minio-secret-4f1a"
	endpoint := testserver.MinIO(t, user, secret)
	p.SetTarget(endpoint)
	testserver.IsolateAWS(t, user, secret)
	raw := func(ep string) string {
		return fmt.Sprintf("s3://%s/%s?endpoint=%s&use_path_style=true&disable_https=true&region=us-east-1", bucket, storetest.NewPrefix(), ep)
	}
	var c *s3.Client
	direct := openObjectStore(t, raw(endpoint))
	if !direct.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *s3.Client behind the bucket")
	}
	testserver.UntilMinIOReady(t, func() error {
		_, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(bucket)})
		return err
	})
	return raw(p.URL())
}

func openGCS(t *testing.T, p *faultproxy.Proxy) string {
	host := testserver.FakeGCS(t, p.Addr()) // upload URLs point at the proxy
	p.SetTarget("http://" + host)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("STORAGE_EMULATOR_HOST", p.Addr())
	direct := openObjectStore(t, "gs://"+bucket)
	var c *storagev1.Service
	if !direct.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *storagev1.Service behind the bucket")
	}
	if _, err := c.Buckets.Insert("test-project", &storagev1.Bucket{Name: bucket}).Context(t.Context()).Do(); err != nil {
		t.Fatalf("creating bucket: %v", err)
	}
	return "gs://" + bucket + "/" + storetest.NewPrefix()
}

func openAzure(t *testing.T, p *faultproxy.Proxy) string {
	endpoint := testserver.Azurite(t)
	u, _ := url.Parse(endpoint)
	p.SetTarget("http://" + u.Host)
	for _, k := range []string{"AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", testserver.AzuriteConnString(p.URL()+u.Path, testserver.AzuriteKey))
	direct := openObjectStore(t, "azblob://"+bucket)
	var c *container.Client
	if !direct.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *container.Client behind the bucket")
	}
	if _, err := c.Create(t.Context(), nil); err != nil {
		t.Fatalf("creating container: %v", err)
	}
	return "azblob://" + bucket + "/" + storetest.NewPrefix()
}

func openObjectStore(t *testing.T, raw string) *store.ObjectStore {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := all.Mux().Open(t.Context(), raw, store.Options{Retries: -1})
	if err != nil {
		t.Fatalf("Open(%s): %v", u.Redacted(), err)
	}
	obj, ok := store.As[*store.ObjectStore](st)
	if !ok {
		t.Fatalf("Open(%s) is not an object store", u.Redacted())
	}
	if c, ok := obj.Bucket().(interface{ Close() error }); ok {
		t.Cleanup(func() { c.Close() })
	}
	return obj
}

// logCounter counts the retry lines of a store's Logf.
type logCounter struct {
	t       *testing.T
	retries atomic.Int32
}

func (l *logCounter) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if strings.Contains(line, "; retrying in ") {
		l.retries.Add(1)
	}
	l.t.Log(line)
}

func openStore(t *testing.T, raw string, insecure bool, logs *logCounter) store.Store {
	st, err := all.Mux().Open(t.Context(), raw, store.Options{
		Insecure: insecure, Logf: logs.logf, RetryDelay: retryDelay, StallTimeout: stallTimeout,
	})
	if err != nil {
		t.Fatalf("Open(%s): %v", store.Redact(raw), err)
	}
	return st
}

// tree writes a small tree into a new folder: a few files of random bytes
// (so that the entry has a few packs of packSize) and extra files.
func tree(t *testing.T, extra map[string]string) string {
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		data := make([]byte, 40_000)
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(dir, "sub", fmt.Sprintf("f%d.bin", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range extra {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// files returns the regular files under dir and their contents, without
// the restore state.
func files(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && d.Name() != archive.StateFileName {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			out[filepath.ToSlash(rel)] = string(data)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func save(ctx context.Context, st store.Store, key, dir string, force bool, logf func(string, ...any)) error {
	_, err := engine.Save(ctx, st, engine.SaveOptions{Key: key, Folders: []string{dir}, PackSize: packSize, Force: force, Logf: logf})
	return err
}

func restore(ctx context.Context, st store.Store, key, dir string, logf func(string, ...any)) (*engine.RestoreResult, error) {
	return engine.Restore(ctx, st, engine.RestoreOptions{Key: key, Folders: []string{dir}, Logf: logf})
}

// row is one line of the outcome table.
type row struct{ store, phase, fault, outcome string }

var (
	tableMu sync.Mutex
	table   []row
	ran     = map[string]bool{}
)

func record(r row) {
	tableMu.Lock()
	table = append(table, r)
	tableMu.Unlock()
}

// fault is a fault of the matrix; reads says it applies to phases that
// read, writes to phases that write.
type fault struct {
	name          string
	rule          faultproxy.Rule
	reads, writes bool
}

var faults = []fault{
	{"connection reset", faultproxy.Rule{Fault: faultproxy.Reset}, true, true},
	{"reset mid-body", faultproxy.Rule{Fault: faultproxy.Reset, AfterBytes: 40}, true, false},
	{"stall", faultproxy.Rule{Fault: faultproxy.Stall}, true, true},
	{"stall mid-body", faultproxy.Rule{Fault: faultproxy.Stall, AfterBytes: 40}, true, false},
	{"HTTP 500", faultproxy.Rule{Fault: faultproxy.Status, Status: 500}, true, true},
	{"HTTP 502", faultproxy.Rule{Fault: faultproxy.Status, Status: 502}, true, true},
	{"HTTP 503", faultproxy.Rule{Fault: faultproxy.Status, Status: 503}, true, true},
	{"HTTP 429, Retry-After: 1", faultproxy.Rule{Fault: faultproxy.Status, Status: 429, RetryAfter: "1"}, true, true},
	{"truncated body", faultproxy.Rule{Fault: faultproxy.Truncate, AfterBytes: 40}, true, false},
	{"one byte corrupted", faultproxy.Rule{Fault: faultproxy.Corrupt, AfterBytes: 40}, true, false},
	{"slow link (256 KB/s)", faultproxy.Rule{Fault: faultproxy.Throttle, BytesPerSecond: 256 << 10}, true, false},
	{"done, answer lost", faultproxy.Rule{Fault: faultproxy.ResetAfterForward}, false, true},
	{"stall on every attempt", faultproxy.Rule{Fault: faultproxy.Stall, Times: -1}, true, true},
}

// TestReliability runs the fault matrix and the racing writers on every
// store, then writes docs/RELIABILITY.md when CACHE_WRITE_RELIABILITY=1.
func TestReliability(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers: not with -short")
	}
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			p := faultproxy.New(t, "")
			raw := b.open(t, p)
			t.Run("Faults", func(t *testing.T) { faultMatrix(t, b, p, raw) })
			t.Run("RacingWriters", func(t *testing.T) {
				p.Clear()
				logs := &logCounter{t: t}
				racingWriters(t, openStore(t, raw, b.insecure, logs))
			})
			if !t.Failed() && !t.Skipped() {
				tableMu.Lock()
				ran[b.name] = true
				tableMu.Unlock()
			}
		})
	}
	t.Run("file:// (directory)", func(t *testing.T) {
		fileStore(t)
		if !t.Failed() {
			ran["file"] = true
		}
	})
	if os.Getenv("CACHE_WRITE_RELIABILITY") != "" {
		if len(ran) != len(backends())+1 {
			t.Fatalf("CACHE_WRITE_RELIABILITY is set but only %d of %d stores ran: not writing a partial table", len(ran), len(backends())+1)
		}
		writeTable(t)
	}
}

func faultMatrix(t *testing.T, b backend, p *faultproxy.Proxy, raw string) {
	logs := &logCounter{t: t}
	st := openStore(t, raw, b.insecure, logs)
	ctx := t.Context()

	// The entry the restore phases read, saved without faults.
	src := tree(t, map[string]string{"base.txt": "base"})
	want := files(t, src)
	if err := save(ctx, st, "entry", src, false, t.Logf); err != nil {
		t.Fatalf("saving the entry: %v", err)
	}
	ref, err := st.GetRef(ctx, "entry")
	if err != nil {
		t.Fatal(err)
	}
	if len(ref.Packs) < 2 {
		t.Fatalf("the entry has %d packs, want a few", len(ref.Packs))
	}

	type phase struct {
		name         string
		method, path string
		write        bool
	}
	m, pth := b.refGet("entry")
	phases := []phase{{name: "ref lookup", method: m, path: pth}}
	m, pth = b.blobGet(ref.Index.Digest.Hex())
	phases = append(phases, phase{name: "index fetch", method: m, path: pth})
	m, pth = b.blobGet(ref.Packs[len(ref.Packs)-1].Digest.Hex())
	phases = append(phases, phase{name: "pack transfer", method: m, path: pth})
	m, pth = b.blobPut()
	phases = append(phases, phase{name: "blob put", method: m, path: pth, write: true})
	phases = append(phases, phase{name: "ref publish", write: true}) // the pattern names the key

	for _, ph := range phases {
		for i, f := range faults {
			if (ph.write && !f.writes) || (!ph.write && !f.reads) {
				continue
			}
			if f.rule.Times < 0 && (ph.name == "ref lookup" || ph.name == "index fetch") {
				continue // one read phase is enough to show the bound; it costs (retries+1) stall timeouts
			}
			t.Run(ph.name+"/"+f.name, func(t *testing.T) {
				logs.t = t
				p.Clear()
				rule := f.rule
				rule.Method, rule.Path = ph.method, ph.path
				var outcome string
				start := time.Now()
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				defer cancel()
				before := logs.retries.Load()
				var fired int
				if !ph.write {
					p.Add(rule)
					outcome = restoreOutcome(t, octx, st, want)
					fired = p.Faults()
				} else {
					key := fmt.Sprintf("save-%d-%d", len(ph.name), i)
					if ph.name == "ref publish" {
						rule.Method, rule.Path = b.refPut(key)
					}
					p.Add(rule)
					outcome, fired = saveOutcome(t, octx, st, key, p)
				}
				elapsed := time.Since(start)
				if fired == 0 {
					t.Fatalf("the fault never fired: no request matched %s %s (requests: %v)", rule.Method, rule.Path, p.Requests())
				}
				if elapsed > bound {
					t.Errorf("took %v, more than the bound %v", elapsed, bound)
				}
				if f.rule.Times < 0 && !strings.HasPrefix(outcome, "hit") && !strings.HasPrefix(outcome, "saved") {
					// Every attempt stalled: the cost is the stall timeout
					// times the attempts, not the operation's timeout.
					if max := time.Duration(retries+1)*stallTimeout + 5*time.Second; elapsed > max {
						t.Errorf("a stalled server cost %v, more than %v", elapsed, max)
					}
					// Parallel uploads stall and give up in any order:
					// the counts vary, so the table gives none.
					n := int(logs.retries.Load() - before)
					if ph.name != "ref publish" && n < retries {
						t.Errorf("%d retries logged, want at least %d", n, retries)
					}
					outcome += ", every attempt stalled"
				} else if n := logs.retries.Load() - before; n > 0 {
					outcome += fmt.Sprintf("; %d %s logged", n, plural(int(n), "retry", "retries"))
				}
				t.Logf("%s / %s: %s (%v)", ph.name, f.name, outcome, elapsed.Round(time.Millisecond))
				record(row{b.name, ph.name, f.name, outcome})
			})
		}
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// restoreOutcome restores "entry" and checks that a hit has exactly the
// saved files.
func restoreOutcome(t *testing.T, ctx context.Context, st store.Store, want map[string]string) string {
	dst := filepath.Join(t.TempDir(), "restored")
	res, err := restore(ctx, st, "entry", dst, t.Logf)
	if err == nil && res.Restored {
		if got := files(t, dst); !maps.Equal(got, want) {
			t.Fatalf("FALSE HIT: the restore reported success with different files")
		}
		return "hit, correct files"
	}
	if ctx.Err() != nil {
		t.Fatalf("the operation timed out (a hang): %v", err)
	}
	if err != nil {
		t.Logf("restore: %v", err)
	}
	return "clean failure (" + reason(err, res) + ")"
}

// saveOutcome saves a new entry under key and checks what is published:
// nothing, or a complete entry. It returns the outcome and how many
// requests of the save got the fault.
func saveOutcome(t *testing.T, ctx context.Context, st store.Store, key string, p *faultproxy.Proxy) (string, int) {
	src := tree(t, map[string]string{"key.txt": key})
	want := files(t, src)
	err := save(ctx, st, key, src, false, t.Logf)
	if ctx.Err() != nil {
		t.Fatalf("the operation timed out (a hang): %v", err)
	}
	if err != nil {
		t.Logf("save: %v", err)
		if os.Getenv("DEBUG_PROXY") != "" {
			t.Logf("requests: %v", p.Requests())
		}
	}
	fired := p.Faults()
	// Check what the store holds, without faults.
	p.Clear()
	dst := filepath.Join(t.TempDir(), "check")
	res, rerr := restore(context.Background(), st, key, dst, t.Logf)
	published := rerr == nil && res.Restored
	if published && !maps.Equal(files(t, dst), want) {
		t.Fatalf("TORN ENTRY: %s restores with different files", key)
	}
	switch {
	case err == nil && published:
		return "saved, restores correctly", fired
	case err == nil:
		t.Fatalf("the save reported success but %s does not restore: %v", key, rerr)
	case published:
		return "save failed (" + reason(err, nil) + "), but the store had written the ref: the entry is complete", fired
	}
	if _, gerr := st.GetRef(context.Background(), key); !errors.Is(gerr, store.ErrNotFound) {
		t.Fatalf("after a failed save, GetRef(%s) = %v, want not found", key, gerr)
	}
	return "save failed (" + reason(err, nil) + "), no entry", fired
}

// reason names the cause of a failure in words that do not change from
// run to run (no ports, digests or times).
func reason(err error, res *engine.RestoreResult) string {
	msg := ""
	if err != nil {
		msg = err.Error()
	} else if res != nil {
		msg = res.MissReason
	}
	switch {
	case err == nil:
		return "miss"
	case strings.Contains(msg, "gave up after"):
		return "retries exhausted"
	case strings.Contains(msg, "put ref"):
		return "ref put not retried: the store may have written it"
	case strings.Contains(msg, "mismatch") || strings.Contains(msg, "checksum") || strings.Contains(msg, "CRC"):
		return "digest mismatch, not retried"
	case strings.Contains(msg, "get ref") || strings.Contains(msg, "decoding ref") || strings.Contains(msg, "holds key"):
		return "corrupt ref refused"
	case strings.Contains(msg, "not a regular file") || strings.Contains(msg, "is a FIFO") || strings.Contains(msg, "symbolic link") || strings.Contains(msg, "directory"):
		return "not a regular file: refused at once"
	case strings.Contains(msg, "pack") || strings.Contains(msg, "index"):
		return "corrupt data refused"
	}
	return "error: " + firstWords(msg)
}

func firstWords(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if len(s) > 60 {
		s = s[:60] + "..."
	}
	return s
}

func writeTable(t *testing.T) {
	var b strings.Builder
	b.WriteString(`# Reliability: faults at each phase, on every store

Generated by ` + "`CACHE_WRITE_RELIABILITY=1 go test ./internal/reliability/`" + ` (TestReliability); do not edit.

Each store runs against its real server on 127.0.0.1 through a fault-injecting proxy
(internal/faultproxy). Each row injects one fault into the first request of one phase (or,
for "stall on every attempt", into every request of it) and records how the save or restore
ended. The test fails on a false hit (a restore that reports success with other files), a torn
entry (a published ref that does not restore completely), a failed save that leaves a ref, or an
operation that takes longer than the bound: every attempt stalled (` + fmt.Sprint(retries+1) + ` attempts x a ` + stallTimeout.String() + ` stall
timeout in the test) plus backoffs, far below the operation's own timeout.

Settings of the test: ` + fmt.Sprintf("store.Options{Retries: %d (default), RetryDelay: %s, StallTimeout: %s}", retries, retryDelay, stallTimeout) + `.
A ref is published at most once: a ref PUT is retried only on 429 or 503 (the store declined it)
or a connection that never opened; after a reset, a stall or a 500/502 it may have been written,
so the save fails instead of publishing twice.

Every retry prints one line through the store's Logf ("... failed (why); retrying in d (attempt n
of m)"); "n retries logged" counts them. One exception: on GCS, the Google SDK resumes a download
cut off halfway by itself (a ranged GET from the byte it reached) before the retry layer sees an
error, so those rows show no retry line. A corrupted byte is caught by the digest (or GCS's CRC32C)
and fails at once: the entry is not restored, never restored wrong.

`)
	stores := []string{}
	seen := map[string]bool{}
	for _, r := range table {
		if !seen[r.store] {
			seen[r.store] = true
			stores = append(stores, r.store)
		}
	}
	for _, s := range stores {
		fmt.Fprintf(&b, "## %s\n\n| phase | fault | outcome |\n|---|---|---|\n", s)
		for _, r := range table {
			if r.store == s {
				fmt.Fprintf(&b, "| %s | %s | %s |\n", r.phase, r.fault, r.outcome)
			}
		}
		b.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "RELIABILITY.md"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
