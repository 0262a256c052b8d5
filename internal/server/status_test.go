package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testenv"
)

// blob is a blob for save: new random bytes of a size, or the bytes of
// a blob shared with another entry.
type blob []byte

func randomBlob(t *testing.T, n int) blob { b, _ := storetest.RandomBlob(t, n); return b }

// save puts blobs through the API with tok (the first as the index),
// then the ref of key naming them, created at created by tool.
func (f *fixture) save(tok, key string, created time.Time, tool string, blobs ...blob) *store.Ref {
	f.t.Helper()
	ref := &store.Ref{Format: format.Version, Key: key, Created: created.UTC(), Tool: tool, Platform: "linux/amd64"}
	for i, b := range blobs {
		d := digest.FromBytes(b)
		if status, body, _ := f.do("PUT", blobPath(d), tok, b); status != http.StatusCreated && status != http.StatusOK {
			f.t.Fatalf("PUT blob: %d %s", status, body)
		}
		desc := format.Descriptor{Digest: d, Size: int64(len(b))}
		if i == 0 {
			ref.Index = desc
		} else {
			ref.Packs = append(ref.Packs, desc)
		}
	}
	body, _ := json.Marshal(ref)
	f.want(http.StatusCreated, "", "PUT", httpapi.RefsPath+key, tok, body)
	return ref
}

// page gets the status page.
func (f *fixture) page() string {
	f.t.Helper()
	status, body, h := f.do("GET", "/", "", nil)
	if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		f.t.Fatalf("GET /: %d %s %s", status, h.Get("Content-Type"), body)
	}
	return body
}

var (
	rowRE  = regexp.MustCompile(`(?s)<tr class="([a-z]+)">(.*?)</tr>`)
	cellRE = regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`)
	tagRE  = regexp.MustCompile(`<[^>]*>`)
)

// rows returns the text of the cells of each row of class in a page.
func rows(page, class string) [][]string {
	var out [][]string
	for _, m := range rowRE.FindAllStringSubmatch(page, -1) {
		if m[1] != class {
			continue
		}
		var cells []string
		for _, c := range cellRE.FindAllStringSubmatch(m[2], -1) {
			cells = append(cells, strings.TrimSpace(html.UnescapeString(tagRE.ReplaceAllString(c[1], ""))))
		}
		out = append(out, cells)
	}
	return out
}

// row returns the first row of class whose cells hold every one of want.
func row(t *testing.T, page, class string, want ...string) []string {
	t.Helper()
	for _, r := range rows(page, class) {
		if func() bool {
			for _, w := range want {
				if !slices.Contains(r, w) {
					return false
				}
			}
			return true
		}() {
			return r
		}
	}
	t.Fatalf("no %s row with %q; rows:\n%q", class, want, rows(page, class))
	return nil
}

// idText returns the text of the element with id in a page.
func idText(t *testing.T, page, id string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)id="` + regexp.QuoteMeta(id) + `"[^>]*>(.*?)</`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no element %q in the page", id)
	}
	return strings.TrimSpace(html.UnescapeString(m[1]))
}

const hash1 = "3f6a0c1d9b2e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c"

// statusServer is a server over a directory with the status page and a
// GC (TTL 7 days, at most 3 MiB), holding four entries in scopes main and
// pr, saved through the API; one is 10 days old, and one names a shared
// blob; one was saved by a "tool" with markup in its name. Main restored
// its entry once, pr found it once and missed once; the chart's history
// holds five samples from before.
func statusServer(t *testing.T) (*fixture, map[string]*store.Ref) {
	t.Helper()
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewObjectStore(b)
	now := time.Now()
	var hist bytes.Buffer
	hist.WriteString(`{"format":1,"samples":[`)
	for i := range 5 {
		if i > 0 {
			hist.WriteString(",")
		}
		fmt.Fprintf(&hist, `{"t":%q,"bytes":%d,"entries":%d}`, now.Add(time.Duration(i-5)*time.Hour).UTC().Format(time.RFC3339), (i+1)<<20, i)
	}
	hist.WriteString(`]}`)
	if err := st.PutMeta(t.Context(), server.HistoryRecord, hist.Bytes()); err != nil {
		t.Fatal(err)
	}
	c, err := server.NewCollector(st, server.CollectorOptions{TTL: 7 * 24 * time.Hour, MaxSize: 3 << 20, Grace: time.Hour, Interval: time.Hour, Holder: "test"})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, st, server.Options{StatusPage: true, Collector: c})
	shared := randomBlob(t, 1<<20)
	refs := map[string]*store.Ref{
		"go":  f.save(mainToken, "go-linux-"+hash1, now.Add(-2*time.Hour), "cache v1.2.0", randomBlob(t, 512), randomBlob(t, 2560<<10)),
		"npm": f.save(mainToken, "npm-"+hash1[:40], now.Add(-time.Hour), "cache v1.2.0", randomBlob(t, 300), shared),
		"pr":  f.save(prToken, "go-linux-"+hash1[:20], now.Add(-30*time.Minute), "cache v1.2.1", randomBlob(t, 400), shared, randomBlob(t, 200<<10)),
		"old": f.save(prToken, "old-cache-v1", now.Add(-10*24*time.Hour), `<script>alert(1)</script>`, randomBlob(t, 700)),
	}
	f.getRef(mainToken, "go-linux-"+hash1)
	f.getRef(prToken, "go-linux-"+hash1)
	f.want(http.StatusNotFound, httpapi.CodeNotFound, "GET", httpapi.RefsPath+"go-linux-missing", prToken, nil)
	f.inFlight.Wait() // the last-use records are written
	return f, refs
}

// checkStatusPage checks what statusServer's page shows, in the HTML a
// test got or in a browser's DOM.
func checkStatusPage(t *testing.T, page string, refs map[string]*store.Ref) {
	t.Helper()
	for _, tc := range []struct{ name, scope, size string }{
		{"go", "main", "2.5 MiB"},
		{"npm", "main", "1.0 MiB"},
		{"pr", "pr", "1.2 MiB"},
		{"old", "pr", "700 B"},
	} {
		r := row(t, page, "entry", tc.scope, refs[tc.name].Key, tc.size)
		if tc.name == "go" && r[5] == "never" {
			t.Errorf("main's restored entry shows no last restore: %q", r)
		}
		if tc.name == "npm" && r[5] != "never" {
			t.Errorf("an entry never restored shows a last restore: %q", r)
		}
	}
	if got := len(rows(page, "entry")); got != 4 {
		t.Errorf("%d entries listed, want 4", got)
	}
	// The tool's name is shown as the text it is: no element was made of it.
	row(t, page, "entry", "<script>alert(1)</script> linux/amd64")
	if strings.Contains(page, "<script") {
		t.Errorf("the page holds a script element:\n%s", page)
	}
	// Totals: 4 entries of 4.7 MiB, 3.7 MiB with the shared MiB once.
	for id, want := range map[string]string{"total-entries": "4", "total-sum": "4.7 MiB", "total-unique": "3.7 MiB"} {
		if got := idText(t, page, id); got != want {
			t.Errorf("%s: %q, want %q", id, got, want)
		}
	}
	// Hit rates: main 1 of 1; pr found main's entry and missed once.
	row(t, page, "scope", "main", "2", "1", "100%")
	row(t, page, "scope", "pr", "2", "2", "1", "50%")
	row(t, page, "prefix", "main", "go-linux-", "1", "2.5 MiB")
	row(t, page, "prefix", "pr", "go-linux-", "1", "1.2 MiB")
	row(t, page, "prefix", "main", "npm-", "1", "1.0 MiB")
	// The queue: the old entry by age, then the least recently used of
	// the rest while over 3 MiB: npm (saved an hour ago; evicting it frees
	// only its index, since pr's entry shares its pack), then pr's. The go
	// entry, saved first but restored since, stays.
	if got := len(rows(page, "evicted")); got != 3 {
		t.Errorf("eviction queue of %d entries, want 3: %q", got, rows(page, "evicted"))
	}
	row(t, page, "evicted", "pr", "old-cache-v1", "older-than", "700 B")
	row(t, page, "evicted", "main", refs["npm"].Key, "max-size", "1.0 MiB")
	row(t, page, "evicted", "pr", refs["pr"].Key, "max-size", "1.2 MiB")
	row(t, page, "entry", refs["go"].Key, "")
	// The chart: an SVG with the five samples of the history and this one.
	if !strings.Contains(page, `<svg id="size-chart"`) || !strings.Contains(page, "6 samples") {
		t.Errorf("no chart of 6 samples in the page")
	}
	m := regexp.MustCompile(`<polyline class="line" points="([^"]*)"`).FindStringSubmatch(page)
	if m == nil || len(strings.Fields(m[1])) != 6 {
		t.Errorf("the chart's line is %q, want 6 points", m)
	}
	if !strings.Contains(page, "--max-size 3.0 MiB") {
		t.Errorf("the chart shows no --max-size line")
	}
}

// TestStatusPage: the page lists each entry with its scope, key, size and
// last restore, the totals with shared blobs once, hit rates per scope,
// key prefixes, the eviction queue and a chart, with untrusted text
// escaped.
func TestStatusPage(t *testing.T) {
	f, refs := statusServer(t)
	status, page, h := f.do("GET", "/", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /: %d %s", status, page)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	checkStatusPage(t, page, refs)
	if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the tool's name is not escaped in the page")
	}
}

// TestStatusPageChromium loads the status page in a real headless
// Chromium: the DOM it builds lists the entries with their sizes, the
// totals and the chart; the screenshot is a test artifact.
func TestStatusPageChromium(t *testing.T) {
	bin := chromium(t)
	f, refs := statusServer(t)
	dom := runChromium(t, bin, "--dump-dom", f.url+"/")
	checkStatusPage(t, string(dom), refs)

	shot := filepath.Join(artifacts(t), "status-page.png")
	os.Remove(shot)
	runChromium(t, bin, "--window-size=1200,900", "--hide-scrollbars", "--screenshot="+shot, f.url+"/")
	fh, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer fh.Close()
	cfg, err := png.DecodeConfig(fh)
	if err != nil || cfg.Width != 1200 || cfg.Height != 900 {
		t.Fatalf("screenshot %s: %+v, %v; want a 1200x900 PNG", shot, cfg, err)
	}
	t.Logf("screenshot: %s", shot)
}

// chromium finds Debian's chromium, or skips (fails in CI).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.SkipUnless(t, false, "chromium is not installed: run `make tools` or `bash hack/install-browser-tools.sh`")
	return ""
}

// runChromium runs headless chromium with args and returns its output. It
// gets its own HOME and profile, reaches nothing but 127.0.0.1, and is
// killed (its process group) after two minutes.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir=" + filepath.Join(home, "profile"),
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
	}, args...)...)
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "TMPDIR=" + home}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.Bytes())
	}
	return out
}

// artifacts is where tests leave files to look at: $CACHE_TEST_ARTIFACTS,
// else test-artifacts/ at the module's root (git-ignored).
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CACHE_TEST_ARTIFACTS")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for root := wd; ; root = filepath.Dir(root) {
			if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
				dir = filepath.Join(root, "test-artifacts")
				break
			}
			if filepath.Dir(root) == root {
				t.Fatalf("no go.mod above %s", wd)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// hostileStore lists, besides its own, a ref whose key is markup: a
// backend that does not check keys (or a bucket written by hand).
type hostileStore struct{ store.Store }

const hostileKey = `main.<script>alert(2)</script><img src=x onerror=alert(3)>`

func (h hostileStore) Unwrap() store.Store { return h.Store }

func (h hostileStore) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	keys, err := h.Store.ListRefs(ctx, prefix)
	return append(keys, hostileKey), err
}

func (h hostileStore) GetRef(ctx context.Context, key string) (*store.Ref, error) {
	if key == hostileKey {
		return &store.Ref{Format: format.Version, Key: key, Created: time.Now(), Index: format.Descriptor{Digest: digest.FromBytes(nil), Size: 1}}, nil
	}
	return h.Store.GetRef(ctx, key)
}

// TestStatusPageEscapesKeys: a key with markup in it is listed as text.
func TestStatusPageEscapesKeys(t *testing.T) {
	f := newFixture(t, hostileStore{memory.NewStore(t.Name())}, server.Options{StatusPage: true})
	page := f.page()
	if strings.Contains(page, "<script") || strings.Contains(page, "<img") {
		t.Fatalf("markup of a key made it into the page:\n%s", page)
	}
	row(t, page, "entry", "main", "<script>alert(2)</script><img src=x onerror=alert(3)>", "1 B")
}

// TestStatusPageRoutes: GET / is the page only when it is on; every other
// unknown path is still the API's 404.
func TestStatusPageRoutes(t *testing.T) {
	on := newFixture(t, memory.NewStore("on"), server.Options{StatusPage: true})
	off := newFixture(t, memory.NewStore("off"), server.Options{})
	on.page()
	if status, _, h := on.do("HEAD", "/", "", nil); status != http.StatusOK || h.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("HEAD /: %d %s", status, h.Get("Content-Type"))
	}
	on.want(http.StatusNotFound, httpapi.CodeNotFound, "GET", "/index.html", "", nil)
	on.want(http.StatusNotFound, httpapi.CodeNotFound, "GET", "/favicon.ico", "", nil)
	on.want(http.StatusNotFound, httpapi.CodeNotFound, "POST", "/", "", nil)
	off.want(http.StatusNotFound, httpapi.CodeNotFound, "GET", "/", "", nil)
}

// countingLists counts the listings of refs: each computation of the
// page lists them once.
type countingLists struct {
	store.Store
	lists atomic.Int64
}

func (c *countingLists) Unwrap() store.Store { return c.Store }

func (c *countingLists) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	c.lists.Add(1)
	return c.Store.ListRefs(ctx, prefix)
}

// TestStatusPageCached: many requests at once cost one computation, and
// the page is not recomputed within 15 seconds; after that it is.
func TestStatusPageCached(t *testing.T) {
	clk := newClock()
	st := &countingLists{Store: memory.NewStore(t.Name())}
	putRef(t, st, "default.first", clk.Now())
	f := newFixture(t, st, server.Options{StatusPage: true, Now: clk.Now})
	var wg sync.WaitGroup
	pages := make([]string, 20)
	for i := range pages {
		wg.Go(func() {
			_, pages[i], _ = f.do("GET", "/", "", nil)
		})
	}
	wg.Wait()
	if n := st.lists.Load(); n != 1 {
		t.Errorf("20 requests listed the refs %d times, want 1", n)
	}
	for _, p := range pages {
		if p != pages[0] {
			t.Fatal("concurrent requests got different pages")
		}
	}
	putRef(t, st, "default.second", clk.Now())
	clk.Set(clk.Now().Add(14 * time.Second))
	if p := f.page(); strings.Contains(p, "second") || st.lists.Load() != 1 {
		t.Errorf("the page was recomputed within 15 s")
	}
	clk.Set(clk.Now().Add(2 * time.Second))
	if p := f.page(); !strings.Contains(p, "second") || st.lists.Load() != 2 {
		t.Errorf("the page was not recomputed after 15 s")
	}
}

// TestStatusPageBounded: at most 500 entries are listed, and the page
// says how many more there are.
func TestStatusPageBounded(t *testing.T) {
	st := memory.NewStore(t.Name())
	now := time.Now()
	idx := storetest.PutBlob(t, st, []byte("index"))
	for i := range 503 {
		ref := &store.Ref{Format: format.Version, Key: fmt.Sprintf("default.k%03d", i), Index: idx, Created: now.Add(time.Duration(i) * time.Second)}
		if err := st.PutRef(t.Context(), ref); err != nil {
			t.Fatal(err)
		}
	}
	page := newFixture(t, st, server.Options{StatusPage: true}).page()
	if n := len(rows(page, "entry")); n != 500 {
		t.Errorf("%d entries listed, want 500", n)
	}
	if got := idText(t, page, "entries-more"); got != "and 3 more" {
		t.Errorf("%q, want %q", got, "and 3 more")
	}
	if got := idText(t, page, "total-entries"); got != "503" {
		t.Errorf("total %q, want 503", got)
	}
	// Most recently used first: the oldest three are the ones left out.
	row(t, page, "entry", "k502")
	for _, r := range rows(page, "entry") {
		if r[1] == "k000" {
			t.Errorf("the oldest entry is listed, a newer one left out")
		}
	}
}

// TestStatusHistory: the chart's samples are kept in the store's record,
// so a new server (a restart, another replica) shows them; a GC run adds
// one; samples from a page are at most one per 5 minutes; the record is
// untrusted (impossible samples are dropped) and bounded to 200.
func TestStatusHistory(t *testing.T) {
	clk := newClock()
	st := memory.NewStore(t.Name())
	putRef(t, st, "default.a", clk.Now())
	samples := func(page string) int {
		t.Helper()
		m := regexp.MustCompile(`(\d+) samples"`).FindStringSubmatch(page)
		if m == nil {
			t.Fatal("no chart in the page")
		}
		var n int
		fmt.Sscan(m[1], &n)
		return n
	}
	newServer := func() *fixture {
		return newFixture(t, st, server.Options{StatusPage: true, Now: clk.Now})
	}
	if n := samples(newServer().page()); n != 1 {
		t.Fatalf("%d samples, want 1", n)
	}
	clk.Set(clk.Now().Add(time.Minute))
	f := newServer() // a restart
	if n := samples(f.page()); n != 1 {
		t.Fatalf("%d samples a minute later, want 1 (at most one per 5 minutes)", n)
	}
	clk.Set(clk.Now().Add(6 * time.Minute))
	if n := samples(f.page()); n != 2 {
		t.Fatalf("%d samples 6 minutes later, want 2", n)
	}

	// A GC run adds one at once.
	c, err := server.NewCollector(st, server.CollectorOptions{TTL: 24 * time.Hour, Interval: time.Hour, Holder: "a", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	g := newFixture(t, st, server.Options{StatusPage: true, Now: clk.Now, Collector: c})
	clk.Set(clk.Now().Add(time.Second))
	if _, _, err := c.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	clk.Set(clk.Now().Add(time.Minute))
	if n := samples(g.page()); n != 3 {
		t.Fatalf("%d samples after a GC run, want 3", n)
	}

	// A forged record: 300 samples, some impossible.
	var forged []string
	for i := range 300 {
		forged = append(forged, fmt.Sprintf(`{"t":%q,"bytes":%d}`, clk.Now().Add(time.Duration(i-300)*time.Minute).UTC().Format(time.RFC3339), i))
	}
	forged = append(forged, fmt.Sprintf(`{"t":%q,"bytes":5}`, clk.Now().Add(48*time.Hour).UTC().Format(time.RFC3339)), fmt.Sprintf(`{"t":%q,"bytes":-5}`, clk.Now().Add(-30*time.Second).UTC().Format(time.RFC3339)))
	if err := st.PutMeta(t.Context(), server.HistoryRecord, []byte(`{"format":1,"samples":[`+strings.Join(forged, ",")+`]}`)); err != nil {
		t.Fatal(err)
	}
	clk.Set(clk.Now().Add(time.Hour))
	page := newServer().page()
	if n := samples(page); n != 200 {
		t.Fatalf("%d samples from a record of 302, want 200", n)
	}
	data, err := st.GetMeta(t.Context(), server.HistoryRecord)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Samples []struct {
			T     time.Time
			Bytes int64
		}
	}
	if err := json.Unmarshal(data, &rec); err != nil || len(rec.Samples) != 200 {
		t.Fatalf("record of %d samples (%v), want 200", len(rec.Samples), err)
	}
	for _, s := range rec.Samples {
		if s.Bytes < 0 || s.T.After(clk.Now()) {
			t.Errorf("an impossible sample was kept: %+v", s)
		}
	}
	if last := rec.Samples[len(rec.Samples)-1]; !last.T.Equal(clk.Now()) {
		t.Errorf("the newest sample is %v, want the page's at %v", last.T, clk.Now())
	}
}

// TestStatusEvictionQueueIsTheGCs: the queue the page shows is what the
// next GC run evicts.
func TestStatusEvictionQueueIsTheGCs(t *testing.T) {
	clk := newClock()
	start := clk.Now()
	st := memory.NewStore(t.Name())
	shared := storetest.PutBlob(t, st, bytes.Repeat([]byte("s"), 3000))
	for i, age := range []time.Duration{10 * 24 * time.Hour, 3 * time.Hour, 2 * time.Hour, time.Hour, 0} {
		idx := storetest.PutBlob(t, st, bytes.Repeat([]byte{byte('a' + i)}, 1000))
		ref := &store.Ref{Format: format.Version, Key: fmt.Sprintf("default.e%d", i), Index: idx, Packs: []format.Descriptor{shared}, Created: start.Add(-age)}
		if err := st.PutRef(t.Context(), ref); err != nil {
			t.Fatal(err)
		}
	}
	c, err := server.NewCollector(st, server.CollectorOptions{TTL: 7 * 24 * time.Hour, MaxSize: 5500, Grace: time.Hour, Interval: time.Hour, Holder: "a", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, st, server.Options{StatusPage: true, Now: clk.Now, Collector: c, AllowUnauthenticatedReads: true})
	clk.Set(start.Add(time.Minute))
	f.getRef("", "e1") // restored: now the most recently used
	f.inFlight.Wait()
	var queued []string
	for _, r := range rows(f.page(), "evicted") {
		queued = append(queued, r[0]+"."+r[1])
	}
	res, _, err := c.RunOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(queued)
	if got := removedKeys(res); len(got) == 0 || !slices.Equal(got, queued) {
		t.Fatalf("the page queued %v, the GC evicted %v", queued, got)
	}
}

func TestKeyPrefix(t *testing.T) {
	for key, want := range map[string]string{
		"go-linux-" + hash1:             "go-linux-",
		"go-linux-" + hash1 + "-v2":     "go-linux-",
		"npm-" + hash1[:12]:             "npm-",
		"npm-" + hash1[:11]:             "npm-", // too short for a hash: up to the last '-'
		hash1:                           "",
		"node-20.1":                     "node-",
		"maven-deps-2024-a":             "maven-deps-2024-",
		"latest":                        "latest",
		"deadbeefcafe":                  "", // 12 hex digits
		"pip-" + strings.ToUpper(hash1): "pip-",
	} {
		if got := server.KeyPrefix(key); got != want {
			t.Errorf("KeyPrefix(%q) = %q, want %q", key, got, want)
		}
	}
}

// failingLists fails every listing of refs, with markup in the error.
type failingLists struct {
	store.Store
	fail atomic.Bool
}

func (f *failingLists) Unwrap() store.Store { return f.Store }

func (f *failingLists) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	if f.fail.Load() {
		return nil, fmt.Errorf("bucket <b>down</b>")
	}
	return f.Store.ListRefs(ctx, prefix)
}

// TestStatusPageStoreDown: a store that fails gives a 503 page that says
// why (escaped), and the API goes on answering; the page recovers once
// the store does (after the 15 s it is kept).
func TestStatusPageStoreDown(t *testing.T) {
	clk := newClock()
	st := &failingLists{Store: memory.NewStore(t.Name())}
	st.fail.Store(true)
	putRef(t, st, "default.a", clk.Now())
	f := newFixture(t, st, server.Options{StatusPage: true, Now: clk.Now, AllowUnauthenticatedReads: true})
	status, page, _ := f.do("GET", "/", "", nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(page, "bucket &lt;b&gt;down&lt;/b&gt;") {
		t.Fatalf("GET / over a failing store: %d\n%s", status, page)
	}
	f.getRef("", "a")
	st.fail.Store(false)
	clk.Set(clk.Now().Add(16 * time.Second))
	row(t, f.page(), "entry", "default", "a")
}
