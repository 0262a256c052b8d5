package server

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/humanize"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// The status page (GET /, docs/SERVE.md "Status page") is computed at most
// once every statusEvery, however many browsers ask, and lists at most
// statusRows rows per table.
const (
	statusEvery   = 15 * time.Second
	statusTimeout = 30 * time.Second
	statusRows    = 500
)

// The chart of the store's size keeps the last historyLen samples: one at
// each GC run, and one at a computation of the page when the last sample
// is older than sampleEvery.
const (
	historyLen  = 200
	sampleEvery = 5 * time.Minute
)

// HistoryRecord is the name of the record (store.MetaStore) that keeps the
// samples of the status page's chart, so that a restart (or another
// replica) keeps the history.
const HistoryRecord = "status-history"

// hexRun is how many hex digits a segment of a key needs to count as a
// hash ({{hash}} expands to 64) when the key's prefix is cut.
const hexRun = 12

// lookups counts ref lookups (GET /v1/refs/KEY) per scope since the
// server started.
type lookups struct {
	mu sync.Mutex
	by map[string]*hitMiss
}

type hitMiss struct{ hits, misses int64 }

// countLookup counts a ref lookup by a caller whose own scope (its first
// read scope) is scope: a hit when a ref was answered, from any of the
// caller's read scopes.
func (s *Server) countLookup(scope string, hit bool) {
	s.lookups.mu.Lock()
	defer s.lookups.mu.Unlock()
	if s.lookups.by == nil {
		s.lookups.by = map[string]*hitMiss{}
	}
	c := s.lookups.by[scope]
	if c == nil {
		if len(s.lookups.by) >= 10_000 { // scopes come from config, but bound it
			return
		}
		c = &hitMiss{}
		s.lookups.by[scope] = c
	}
	if hit {
		c.hits++
	} else {
		c.misses++
	}
}

func (s *Server) lookupCounts() map[string]hitMiss {
	s.lookups.mu.Lock()
	defer s.lookups.mu.Unlock()
	m := make(map[string]hitMiss, len(s.lookups.by))
	for k, v := range s.lookups.by {
		m[k] = *v
	}
	return m
}

// sizeSample is one point of the chart: the bytes of every entry, each
// blob counted once, at a time.
type sizeSample struct {
	T       time.Time `json:"t"`
	Bytes   int64     `json:"bytes"`
	Entries int       `json:"entries"`
}

// historyFile is the JSON of HistoryRecord.
type historyFile struct {
	Format  int          `json:"format"`
	Samples []sizeSample `json:"samples"`
}

// history is the chart's samples, oldest first, kept in memory and, when
// the store keeps records, in HistoryRecord.
type history struct {
	meta store.MetaStore // nil: in memory only
	logf func(string, ...any)

	mu      sync.Mutex
	loaded  bool
	samples []sizeSample
}

// clean sorts samples, drops the ones that are impossible (zero, after
// now, negative) or at the same time as another, and keeps the last
// historyLen: the record is as untrusted as the rest of the store.
func clean(samples []sizeSample, now time.Time) []sizeSample {
	out := slices.DeleteFunc(slices.Clone(samples), func(p sizeSample) bool {
		return p.T.IsZero() || p.T.After(now.Add(time.Minute)) || p.Bytes < 0 || p.Entries < 0
	})
	slices.SortStableFunc(out, func(a, b sizeSample) int { return a.T.Compare(b.T) })
	out = slices.CompactFunc(out, func(a, b sizeSample) bool { return a.T.Equal(b.T) })
	if len(out) > historyLen {
		out = out[len(out)-historyLen:]
	}
	return out
}

// read returns the samples of the record; a missing or unreadable record
// is none.
func (h *history) read(ctx context.Context, now time.Time) ([]sizeSample, error) {
	data, err := h.meta.GetMeta(ctx, HistoryRecord)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f historyFile
	if json.Unmarshal(data, &f) != nil || f.Format != 1 {
		return nil, nil
	}
	return clean(f.Samples, now), nil
}

// load reads the record once, before the first sample is shown or added.
func (h *history) load(ctx context.Context, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.loaded || h.meta == nil {
		h.loaded = true
		return
	}
	old, err := h.read(ctx, now)
	if err != nil {
		h.logf("warning: status page: reading its history: %v", err)
		return // tried again at the next sample
	}
	h.samples = clean(append(old, h.samples...), now)
	h.loaded = true
}

// add adds p unless the last sample is less than minGap older, and writes
// the record: merged with what the record holds (another replica's
// samples), so that replicas over one store share one history. A failure
// to write it is a warning.
func (h *history) add(ctx context.Context, p sizeSample, minGap time.Duration) {
	h.load(ctx, p.T)
	h.mu.Lock()
	if n := len(h.samples); n > 0 && p.T.Sub(h.samples[n-1].T) < minGap {
		h.mu.Unlock()
		return
	}
	h.samples = clean(append(h.samples, p), p.T)
	h.mu.Unlock()
	if h.meta == nil {
		return
	}
	theirs, err := h.read(ctx, p.T)
	if err != nil {
		h.logf("warning: status page: reading its history: %v", err)
		return
	}
	h.mu.Lock()
	h.samples = clean(append(theirs, h.samples...), p.T)
	data, err := json.Marshal(historyFile{Format: 1, Samples: h.samples})
	h.mu.Unlock()
	if err == nil {
		err = h.meta.PutMeta(ctx, HistoryRecord, data)
	}
	if err != nil {
		h.logf("warning: status page: writing its history: %v", err)
	}
}

func (h *history) get() []sizeSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.samples)
}

// statusPage is the rendered page, recomputed at most every statusEvery.
type statusPage struct {
	hist    *history
	started time.Time
	gc      *Collector // nil: eviction off

	mu   sync.Mutex // held while computing
	at   time.Time
	page []byte
	code int
}

func newStatusPage(st store.Store, o Options) *statusPage {
	p := &statusPage{hist: &history{logf: o.Logf}, started: o.Now(), gc: o.Collector}
	if meta, ok := store.As[store.MetaStore](st); ok {
		p.hist.meta = meta
	}
	if p.gc != nil {
		p.gc.observe(p.gcSample)
	}
	return p
}

// gcSample is called by the collector after each run: the entries it
// kept are the store's size after the run.
func (p *statusPage) gcSample(ctx context.Context, now time.Time, kept []*store.Ref) {
	p.hist.add(ctx, sizeSample{T: now, Bytes: gc.UniqueBytes(kept), Entries: len(kept)}, 0)
}

// serveStatus answers GET / with the status page.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	page, code := s.statusBytes(r.Context())
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// No script runs, nothing is loaded from elsewhere, no frame holds it.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("Content-Length", strconv.Itoa(len(page)))
	w.WriteHeader(code)
	w.Write(page) //nolint:errcheck // the client went away
}

// statusBytes returns the page, computed at most every statusEvery: one
// computation at a time, whose answer every request waiting for it gets.
// The computation does not end with the request that started it.
func (s *Server) statusBytes(ctx context.Context) ([]byte, int) {
	p := s.status
	p.mu.Lock()
	defer p.mu.Unlock()
	now := s.o.Now()
	if p.page != nil && now.Sub(p.at) < statusEvery && !now.Before(p.at) {
		return p.page, p.code
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusTimeout)
	defer cancel()
	var buf bytes.Buffer
	v, err := s.statusView(ctx, now)
	code := http.StatusOK
	if err == nil {
		err = statusTemplate.Execute(&buf, v)
	}
	if err != nil {
		s.o.Logf("warning: status page: %v", err)
		buf.Reset()
		code = http.StatusServiceUnavailable
		statusErrorTemplate.Execute(&buf, err.Error()) //nolint:errcheck // a string always renders
	}
	p.page, p.code, p.at = buf.Bytes(), code, now
	return p.page, p.code
}

// The view of the page. Every string in it is escaped by html/template:
// keys, scopes and what a ref says of itself are untrusted.

type statusView struct {
	Now, Started time.Time
	Store        string
	Every        time.Duration
	Totals       totalsView
	Scopes       []scopeRow
	Prefixes     []prefixRow
	PrefixesMore int
	Entries      []entryRow
	EntriesMore  int
	Eviction     evictionView
	Chart        chartView
	Warnings     []string
}

type totalsView struct {
	Entries, Damaged int
	// Sum is the sizes of the entries added up; Unique counts each blob
	// once, however many entries name it.
	Sum, Unique int64
	// Blobs and BlobBytes are every blob of the store (named or not), when
	// it can list them (Listed).
	Listed    bool
	Blobs     int
	BlobBytes int64
}

type scopeRow struct {
	Name         string
	Entries      int
	Unique       int64
	Hits, Misses int64
}

// Lookups counts the ref lookups of the scope's callers.
func (r scopeRow) Lookups() int64 { return r.Hits + r.Misses }

// HitRate is the share of lookups that hit, as a percentage, or "" when
// there were none.
func (r scopeRow) HitRate() string {
	if n := r.Hits + r.Misses; n > 0 {
		return fmt.Sprintf("%.0f%%", 100*float64(r.Hits)/float64(n))
	}
	return ""
}

type prefixRow struct {
	Scope, Prefix string
	Entries       int
	Unique        int64
	Newest        time.Time
	LastRestored  time.Time
}

type entryRow struct {
	Scope, Key   string
	Size         int64
	Blobs        int
	Created      time.Time
	LastRestored time.Time
	SavedBy      string
	// Evict is the rule that the next GC evicts the entry by, or "".
	Evict string
}

type evictionView struct {
	On      bool
	TTL     time.Duration
	MaxSize int64
	Grace   time.Duration
	Queue   []evictRow
	More    int
	// Freed is what the entries left after the queue would free, each
	// blob counted once (the sweep removes the blobs a grace period later).
	Freed int64
}

type evictRow struct {
	Scope, Key string
	Rule       string
	Size       int64
	LastUse    time.Time
}

// scopeKey splits a backing store's key into its scope and key; a key
// of no scope (written to the store by `cache upload` directly) has the
// scope "".
func (s *Server) scopeKey(sk string) (scope, key string) {
	if s.o.NameRef != nil {
		if sc, k, ok := s.o.NameRef(sk); ok {
			return sc, k
		}
	}
	return scopeKey(sk)
}

func scopeKey(sk string) (scope, key string) {
	sc, k, ok := strings.Cut(sk, scopeSep)
	if !ok || ValidateScope(sc) != nil || k == "" {
		return "", sk
	}
	return sc, k
}

// KeyPrefix is how the status page groups keys: the key up to the first
// '-'-separated segment that looks like a hash (at least 12 hex digits,
// as {{hash}} expands to), "" when the key starts with one; else up to its
// last '-'; else the whole key. So "go-linux-<hash>" and
// "go-linux-<hash>-v2" are "go-linux-", "node-20.1" is "node-" and
// "latest" is "latest".
func KeyPrefix(key string) string {
	off := 0
	for seg := range strings.SplitSeq(key, "-") {
		if isHashLike(seg) {
			return key[:off]
		}
		off += len(seg) + 1
	}
	if i := strings.LastIndexByte(key, '-'); i >= 0 {
		return key[:i+1]
	}
	return key
}

func isHashLike(seg string) bool {
	if len(seg) < hexRun {
		return false
	}
	for _, c := range seg {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func refSize(r *store.Ref) int64 {
	var n int64
	for _, d := range r.Blobs() {
		n += d.Size
	}
	return n
}

// statusView reads the store (every ref, the last-use records, the blob
// listing) and computes the page.
func (s *Server) statusView(ctx context.Context, now time.Time) (*statusView, error) {
	p := s.status
	v := &statusView{Now: now, Started: p.started, Store: s.st.String(), Every: statusEvery}
	refs, damaged, err := store.RefsOrDamaged(ctx, s.st)
	if err != nil {
		return nil, fmt.Errorf("reading the entries: %w", err)
	}
	if in := s.o.InternalRef; in != nil {
		refs = slices.DeleteFunc(refs, func(r *store.Ref) bool { return in(r.Key) })
		damaged = slices.DeleteFunc(damaged, in)
	}
	var used map[string]time.Time
	if meta, ok := store.As[store.MetaStore](s.st); ok {
		used, err = gc.ReadUses(ctx, meta, refs, now)
		if err != nil {
			v.Warnings = append(v.Warnings, "last restores unknown: "+err.Error())
			used = nil
		}
	}
	if bl, ok := store.As[store.BlobLister](s.st); ok {
		blobs, err := bl.ListBlobs(ctx)
		if err != nil {
			v.Warnings = append(v.Warnings, "listing the blobs: "+err.Error())
		} else {
			v.Totals.Listed, v.Totals.Blobs, v.Totals.BlobBytes = true, len(blobs), gc.Bytes(blobs)
		}
	}
	v.Totals.Entries, v.Totals.Damaged, v.Totals.Unique = len(refs), len(damaged), gc.UniqueBytes(refs)
	for _, r := range refs {
		v.Totals.Sum += refSize(r)
	}

	// The eviction queue: what the next run would evict, by the GC's own
	// rule on the same data.
	evict := map[string]string{}
	if p.gc != nil {
		pol := p.gc.policy()
		pol.LastUsed = used
		keep, drop := gc.SelectEntries(refs, pol, now)
		v.Eviction = evictionView{On: true, TTL: pol.OlderThan, MaxSize: pol.MaxSize, Grace: pol.Grace, Freed: v.Totals.Unique - gc.UniqueBytes(keep)}
		for _, k := range damaged {
			drop = append(drop, gc.Decision{Key: k, Rule: gc.RuleDamaged})
		}
		for i, d := range drop {
			evict[d.Key] = d.Rule
			if i >= statusRows {
				v.Eviction.More++
				continue
			}
			row := evictRow{Rule: d.Rule}
			row.Scope, row.Key = s.scopeKey(d.Key)
			if d.Ref != nil {
				row.Size, row.LastUse = refSize(d.Ref), pol.LastUse(d.Ref)
			}
			v.Eviction.Queue = append(v.Eviction.Queue, row)
		}
	}

	// Entries, by scope, most recently used first.
	rows := make([]entryRow, 0, len(refs))
	byScope := map[string][]*store.Ref{}
	type pk struct{ scope, prefix string }
	byPrefix := map[pk][]*store.Ref{}
	for _, r := range refs {
		e := entryRow{Size: refSize(r), Blobs: len(r.Blobs()), Created: r.Created, LastRestored: used[r.Key], Evict: evict[r.Key]}
		e.Scope, e.Key = s.scopeKey(r.Key)
		e.SavedBy = strings.TrimSpace(r.Tool + " " + r.Platform)
		rows = append(rows, e)
		byScope[e.Scope] = append(byScope[e.Scope], r)
		k := pk{e.Scope, KeyPrefix(e.Key)}
		byPrefix[k] = append(byPrefix[k], r)
	}
	lastUse := func(e entryRow) time.Time {
		if e.LastRestored.After(e.Created) {
			return e.LastRestored
		}
		return e.Created
	}
	slices.SortFunc(rows, func(a, b entryRow) int {
		return cmp.Or(cmp.Compare(a.Scope, b.Scope), lastUse(b).Compare(lastUse(a)), cmp.Compare(a.Key, b.Key))
	})
	if len(rows) > statusRows {
		v.EntriesMore = len(rows) - statusRows
		rows = rows[:statusRows]
	}
	v.Entries = rows

	counts := s.lookupCounts()
	for sc := range counts {
		if _, ok := byScope[sc]; !ok {
			byScope[sc] = nil
		}
	}
	for sc, rs := range byScope {
		c := counts[sc]
		v.Scopes = append(v.Scopes, scopeRow{Name: sc, Entries: len(rs), Unique: gc.UniqueBytes(rs), Hits: c.hits, Misses: c.misses})
	}
	slices.SortFunc(v.Scopes, func(a, b scopeRow) int { return cmp.Compare(a.Name, b.Name) })

	for k, rs := range byPrefix {
		row := prefixRow{Scope: k.scope, Prefix: k.prefix, Entries: len(rs), Unique: gc.UniqueBytes(rs)}
		for _, r := range rs {
			row.Newest = later(row.Newest, r.Created)
			row.LastRestored = later(row.LastRestored, used[r.Key])
		}
		v.Prefixes = append(v.Prefixes, row)
	}
	slices.SortFunc(v.Prefixes, func(a, b prefixRow) int {
		return cmp.Or(cmp.Compare(a.Scope, b.Scope), cmp.Compare(a.Prefix, b.Prefix))
	})
	if len(v.Prefixes) > statusRows {
		v.PrefixesMore = len(v.Prefixes) - statusRows
		v.Prefixes = v.Prefixes[:statusRows]
	}

	p.hist.add(ctx, sizeSample{T: now, Bytes: v.Totals.Unique, Entries: len(refs)}, sampleEvery)
	v.Chart = newChart(p.hist.get(), v.Eviction.MaxSize)
	return v, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// The chart's drawing area, in SVG units.
const (
	chartW, chartH = 720.0, 180.0
	chartLeft      = 70.0
	chartTop       = 10.0
)

type chartView struct {
	Samples  int
	Points   string // the polyline's points
	Dot      bool   // one sample: a dot at (X, Y)
	X, Y     float64
	Top      int64   // the value at the top of the chart
	Limit    int64   // --max-size, or 0
	LimitY   float64 // where its line is drawn
	From, To time.Time
	W, H     float64
	Left     float64
	TopY     float64
	Bottom   float64
	Right    float64
}

// newChart lays out samples (oldest first) as a polyline: time across,
// bytes up, from 0 to a little over the largest sample or limit.
func newChart(samples []sizeSample, limit int64) chartView {
	c := chartView{Samples: len(samples), Limit: limit, W: chartLeft + chartW + 10, H: chartTop + chartH + 30,
		Left: chartLeft, TopY: chartTop, Bottom: chartTop + chartH, Right: chartLeft + chartW}
	if len(samples) == 0 {
		return c
	}
	top := limit
	for _, p := range samples {
		top = max(top, p.Bytes)
	}
	c.Top = max(top+top/10, 1)
	c.From, c.To = samples[0].T, samples[len(samples)-1].T
	span := c.To.Sub(c.From)
	y := func(b int64) float64 { return chartTop + chartH - chartH*float64(b)/float64(c.Top) }
	var pts []string
	for _, p := range samples {
		x := chartLeft
		if span > 0 {
			x += chartW * float64(p.T.Sub(c.From)) / float64(span)
		}
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y(p.Bytes)))
	}
	c.Points = strings.Join(pts, " ")
	if len(samples) == 1 {
		c.Dot, c.X, c.Y = true, chartLeft, y(samples[0].Bytes)
	}
	if limit > 0 {
		c.LimitY = y(limit)
	}
	return c
}

// shortDuration is d as a flag would say it: 7d, 36h, 90m, 1h30m.
func shortDuration(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	s, _ = strings.CutSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

//go:embed status.html
var statusHTML string

var statusFuncs = template.FuncMap{
	"bytes": humanize.Bytes,
	"ago":   humanize.Ago,
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"f":   func(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) },
	"dur": shortDuration,
}

var (
	statusTemplate      = template.Must(template.New("status").Funcs(statusFuncs).Parse(statusHTML))
	statusErrorTemplate = template.Must(template.New("error").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tekton-cache: status unavailable</title></head>
<body><h1>Status unavailable</h1><p>{{.}}</p><p>The cache itself may still answer; reload in a few seconds.</p></body></html>
`))
)
