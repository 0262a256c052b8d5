package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// MetricsPath is where a Server answers its Prometheus metrics, unless
// Options.DisableMetrics.
const MetricsPath = "/metrics"

// maxScopeLabels caps the distinct scopes the lookup counters name; the
// scopes past it count as "other".
const maxScopeLabels = 100

// otherLabel is the label of what is past a cap (scopes, methods).
const otherLabel = "other"

// Metrics are the Prometheus metrics of one Server (and of the Collector
// given them), in a registry of their own: several servers in a process
// (tests) never share counters. Every label has a bounded set of values:
// routes are the API's patterns, never raw paths; methods outside the
// HTTP ones are "other"; scopes are capped at maxScopeLabels.
type Metrics struct {
	reg *prometheus.Registry

	requests   *prometheus.CounterVec   // route, method, code
	latency    *prometheus.HistogramVec // route
	bytesIn    *prometheus.CounterVec   // route
	bytesOut   *prometheus.CounterVec   // route
	lookups    *prometheus.CounterVec   // scope, result
	ghaLookups *prometheus.CounterVec   // scope, result
	storeErrs  *prometheus.CounterVec   // op
	uploads    prometheus.Gauge
	throttled  prometheus.Counter
	gcRuns     *prometheus.CounterVec // result
	evicted    prometheus.Counter
	removed    prometheus.Counter
	freed      prometheus.Counter

	scopes labelCap
}

// NewMetrics returns a set of metrics for one Server (Options.Metrics)
// and its Collector (CollectorOptions.Metrics), on a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), scopes: labelCap{max: maxScopeLabels, seen: map[string]bool{}}}
	const ns = "tekton_cache"
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_requests_total",
		Help: "HTTP requests answered, by route pattern, method and status code."}, []string{"route", "method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "http_request_duration_seconds",
		Help:    "Time to answer a request, by route pattern (a blob transfer included).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}}, []string{"route"})
	m.bytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_request_bytes_total",
		Help: "Request body bytes read, by route pattern."}, []string{"route"})
	m.bytesOut = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_response_bytes_total",
		Help: "Response body bytes written, by route pattern."}, []string{"route"})
	m.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "ref_lookups_total",
		Help: `Ref reads, hits and misses, by the caller's scope (its first read scope: a pull request's restore of main's entry is a hit of pr); past 100 scopes, "other".`}, []string{"scope", "result"})
	m.ghaLookups = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "gha_lookups_total",
		Help: `GitHub Actions cache lookups (v1 GET cache, v2 GetCacheEntryDownloadURL), hits and misses, by the caller's first read scope; past 100 scopes, "other".`}, []string{"scope", "result"})
	m.storeErrs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "store_errors_total",
		Help: "Failures of the backing store (not a miss, a client's bad bytes or a cancelled request), by operation."}, []string{"op"})
	m.uploads = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "uploads_in_flight",
		Help: "Blob PUTs being received."})
	m.throttled = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "uploads_throttled_total",
		Help: "Blob PUTs refused with 429 because --max-concurrent-uploads were in flight."})
	m.gcRuns = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "gc_runs_total",
		Help: `GC runs of this replica: "ok", "error", or "skipped" (another replica holds the lease).`}, []string{"result"})
	m.evicted = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "gc_evicted_entries_total",
		Help: "Entries (refs) the GC evicted."})
	m.removed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "gc_removed_blobs_total",
		Help: "Blobs the GC removed."})
	m.freed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "gc_removed_bytes_total",
		Help: "Bytes of the blobs the GC removed."})
	m.reg.MustRegister(m.requests, m.latency, m.bytesIn, m.bytesOut, m.lookups, m.ghaLookups, m.storeErrs, m.uploads, m.throttled,
		m.gcRuns, m.evicted, m.removed, m.freed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler answers the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// observeRequest counts a request answered.
func (m *Metrics) observeRequest(route, method string, code int, seconds float64, in, out int64) {
	m.requests.WithLabelValues(route, methodLabel(method), codeLabel(code)).Inc()
	m.latency.WithLabelValues(route).Observe(seconds)
	m.bytesIn.WithLabelValues(route).Add(float64(in))
	m.bytesOut.WithLabelValues(route).Add(float64(out))
}

// observeLookup counts a ref read by a caller whose first read scope is
// scope: a hit (in any of its read scopes) or a miss (in all of them).
func (s *Server) observeLookup(scope string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	s.m.lookups.WithLabelValues(s.m.scopes.label(scope), result).Inc()
	s.countLookup(scope, hit) // the status page's hit rate
}

// observeGC counts a GC run: res and err from gc.Prune, ran false when
// another replica held the lease.
func (m *Metrics) observeGC(res *gc.Result, ran bool, err error) {
	if m == nil {
		return
	}
	switch {
	case err != nil:
		m.gcRuns.WithLabelValues("error").Inc()
	case !ran:
		m.gcRuns.WithLabelValues("skipped").Inc()
	default:
		m.gcRuns.WithLabelValues("ok").Inc()
	}
	if res != nil {
		m.evicted.Add(float64(len(res.Removed)))
		m.removed.Add(float64(len(res.Blobs.Deleted)))
		m.freed.Add(float64(res.Blobs.DeletedBytes))
	}
}

// labelCap hands out at most max distinct values of a label, then
// otherLabel.
type labelCap struct {
	mu   sync.Mutex
	max  int
	seen map[string]bool
}

func (c *labelCap) label(v string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[v] {
		return v
	}
	if len(c.seen) >= c.max {
		return otherLabel
	}
	c.seen[v] = true
	return v
}

// methodLabel is m when it is an HTTP method, else otherLabel: a client
// may send any token as its method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete,
		http.MethodPatch, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return otherLabel
}

// codeLabel is an HTTP status as a label (the server writes only valid
// ones; an answer never written is 200, as net/http sends it).
func codeLabel(code int) string {
	if code < 100 || code > 999 {
		return otherLabel
	}
	return strconv.Itoa(code)
}

// storeErr is whether err is a failure of the backing store worth
// counting: not a miss, a refused key, bytes that are not the blob, a
// missing capability, or a request the client gave up on.
func storeErr(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil &&
		!errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalidKey) &&
		!errors.Is(err, digest.ErrMismatch) && !errors.Is(err, errors.ErrUnsupported) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// countErrors wraps st so that its failures count in store_errors_total by
// operation. The wrapper has every optional capability, each passed on
// (store.As finds it only where st has it too).
func (m *Metrics) countErrors(st store.Store) store.Store {
	return &countingStore{st: st, m: m}
}

type countingStore struct {
	st store.Store
	m  *Metrics
}

var (
	_ store.Store      = (*countingStore)(nil)
	_ store.Unwrapper  = (*countingStore)(nil)
	_ store.Deleter    = (*countingStore)(nil)
	_ store.BlobStager = (*countingStore)(nil)
	_ store.BlobLister = (*countingStore)(nil)
	_ store.BlobRanger = (*countingStore)(nil)
	_ store.MetaStore  = (*countingStore)(nil)
	_ store.RefLister  = (*countingStore)(nil)
)

func (c *countingStore) count(ctx context.Context, op string, err error) {
	if storeErr(ctx, err) {
		c.m.storeErrs.WithLabelValues(op).Inc()
	}
}

// Unwrap implements store.Unwrapper.
func (c *countingStore) Unwrap() store.Store { return c.st }

// String implements store.Store.
func (c *countingStore) String() string { return c.st.String() }

// StatBlob implements store.Store.
func (c *countingStore) StatBlob(ctx context.Context, d digest.Digest) (store.BlobInfo, error) {
	info, err := c.st.StatBlob(ctx, d)
	c.count(ctx, "stat_blob", err)
	return info, err
}

// GetBlob implements store.Store; a read that fails later counts too.
func (c *countingStore) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	rc, err := c.st.GetBlob(ctx, d)
	c.count(ctx, "get_blob", err)
	if err != nil {
		return nil, err
	}
	return &countingBlob{ReadCloser: rc, ctx: ctx, c: c}, nil
}

// GetBlobRange implements store.BlobRanger.
func (c *countingStore) GetBlobRange(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	br, ok := store.As[store.BlobRanger](c.st)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	rc, err := br.GetBlobRange(ctx, d, off)
	c.count(ctx, "get_blob", err)
	if err != nil {
		return nil, err
	}
	return &countingBlob{ReadCloser: rc, ctx: ctx, c: c}, nil
}

type countingBlob struct {
	io.ReadCloser
	ctx context.Context
	c   *countingStore
}

func (b *countingBlob) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != io.EOF {
		b.c.count(b.ctx, "read_blob", err)
	}
	return n, err
}

// PutBlob implements store.Store. A put that fails because the reader
// (the client's body) did is not the store's failure.
func (c *countingStore) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	body := &bodyReader{r: r}
	err := c.st.PutBlob(ctx, d, size, body)
	if body.err == nil {
		c.count(ctx, "put_blob", err)
	}
	return err
}

// StageBlob implements store.BlobStager.
func (c *countingStore) StageBlob(ctx context.Context) (store.StagedBlob, error) {
	bs, ok := store.As[store.BlobStager](c.st)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	sb, err := bs.StageBlob(ctx)
	c.count(ctx, "stage_blob", err)
	if err != nil {
		return nil, err
	}
	return &countingStaged{StagedBlob: sb, ctx: ctx, c: c}, nil
}

type countingStaged struct {
	store.StagedBlob
	ctx context.Context
	c   *countingStore
}

func (s *countingStaged) Write(p []byte) (int, error) {
	n, err := s.StagedBlob.Write(p)
	s.c.count(s.ctx, "stage_blob", err)
	return n, err
}

func (s *countingStaged) Commit(ctx context.Context, want digest.Digest, size int64) error {
	err := s.StagedBlob.Commit(ctx, want, size)
	s.c.count(ctx, "commit_blob", err)
	return err
}

// GetRef implements store.Store.
func (c *countingStore) GetRef(ctx context.Context, key string) (*store.Ref, error) {
	ref, err := c.st.GetRef(ctx, key)
	c.count(ctx, "get_ref", err)
	return ref, err
}

// PutRef implements store.Store.
func (c *countingStore) PutRef(ctx context.Context, ref *store.Ref) error {
	err := c.st.PutRef(ctx, ref)
	c.count(ctx, "put_ref", err)
	return err
}

// ListRefs implements store.Store.
func (c *countingStore) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	keys, err := c.st.ListRefs(ctx, prefix)
	c.count(ctx, "list_refs", err)
	return keys, err
}

// ListRefInfo implements store.RefLister.
func (c *countingStore) ListRefInfo(ctx context.Context, prefix string) ([]store.RefInfo, error) {
	rl, ok := store.As[store.RefLister](c.st)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	infos, err := rl.ListRefInfo(ctx, prefix)
	c.count(ctx, "list_refs", err)
	return infos, err
}

// ListBlobs implements store.BlobLister.
func (c *countingStore) ListBlobs(ctx context.Context) ([]store.BlobMeta, error) {
	bl, ok := store.As[store.BlobLister](c.st)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	blobs, err := bl.ListBlobs(ctx)
	c.count(ctx, "list_blobs", err)
	return blobs, err
}

// DeleteRef implements store.Deleter.
func (c *countingStore) DeleteRef(ctx context.Context, key string) error {
	del, ok := store.As[store.Deleter](c.st)
	if !ok {
		return errors.ErrUnsupported
	}
	err := del.DeleteRef(ctx, key)
	c.count(ctx, "delete_ref", err)
	return err
}

// DeleteBlob implements store.Deleter.
func (c *countingStore) DeleteBlob(ctx context.Context, d digest.Digest) error {
	del, ok := store.As[store.Deleter](c.st)
	if !ok {
		return errors.ErrUnsupported
	}
	err := del.DeleteBlob(ctx, d)
	c.count(ctx, "delete_blob", err)
	return err
}

// GetMeta implements store.MetaStore.
func (c *countingStore) GetMeta(ctx context.Context, name string) ([]byte, error) {
	meta, ok := store.As[store.MetaStore](c.st)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	data, err := meta.GetMeta(ctx, name)
	c.count(ctx, "get_meta", err)
	return data, err
}

// PutMeta implements store.MetaStore.
func (c *countingStore) PutMeta(ctx context.Context, name string, data []byte) error {
	meta, ok := store.As[store.MetaStore](c.st)
	if !ok {
		return errors.ErrUnsupported
	}
	err := meta.PutMeta(ctx, name, data)
	c.count(ctx, "put_meta", err)
	return err
}
