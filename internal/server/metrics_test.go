package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/httpstore"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

const blobRoute = `route="/v1/blobs/sha256/{hex}"`

func (f *fixture) scrape() testserver.Metrics {
	f.t.Helper()
	return testserver.Scrape(f.t, f.url+server.MetricsPath)
}

// client opens the http store of the fixture with tok.
func (f *fixture) client(tok string) store.Store {
	f.t.Helper()
	f.t.Setenv(httpstore.TokenEnv, tok)
	u, _ := url.Parse(f.url)
	st, err := httpstore.Open(f.t.Context(), u, store.Options{Retries: -1})
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// TestMetricsSaveRestore: after a save and restores through the real
// handler, /metrics counts the 2xx blob PUTs and their bytes, the bytes of
// the blobs read, hits by the scope that answered and misses by the
// caller's first read scope.
func TestMetricsSaveRestore(t *testing.T) {
	f := newFixture(t, memory.NewStore(t.Name()), server.Options{})
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	testtree.Make(t, src)
	main := f.client(mainToken)
	saved, err := engine.Save(t.Context(), main, engine.SaveOptions{Key: "go-1", Folders: []string{src}, PackSize: 1 << 20, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	pr := f.client(prToken)
	r, err := engine.Restore(t.Context(), pr, engine.RestoreOptions{Key: "go-1", Folders: []string{filepath.Join(t.TempDir(), "dst")}, Logf: t.Logf})
	if err != nil || !r.Restored {
		t.Fatalf("Restore = %+v, %v", r, err)
	}
	if _, err := pr.GetRef(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRef(nope) = %v", err)
	}
	if _, err := pr.GetRef(t.Context(), "go-1"); err != nil {
		t.Fatal(err)
	}
	f.inFlight.Wait()
	ref, err := f.st.GetRef(t.Context(), "main.go-1")
	if err != nil {
		t.Fatal(err)
	}
	var blobBytes int64
	for _, d := range ref.Blobs() {
		blobBytes += d.Size
	}

	m := f.scrape()
	for series, want := range map[string]float64{
		`tekton_cache_http_requests_total{code="201",method="PUT",` + blobRoute + `}`:      float64(saved.UploadedBlobs),
		`tekton_cache_http_request_bytes_total{` + blobRoute + `}`:                         float64(saved.UploadedBytes),
		`tekton_cache_http_response_bytes_total{` + blobRoute + `}`:                        float64(blobBytes),
		`tekton_cache_http_requests_total{code="201",method="PUT",route="/v1/refs/{key}"}`: 1,
		`tekton_cache_ref_lookups_total{result="hit",scope="pr"}`:                          2, // the caller's scope, not main's that answered
		`tekton_cache_ref_lookups_total{result="miss",scope="pr"}`:                         1,
		`tekton_cache_uploads_in_flight`:                                                   0,
		`tekton_cache_uploads_throttled_total`:                                             0,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present: %v), want %v", series, got, ok, want)
		}
	}
	if saved.UploadedBlobs < 2 || blobBytes == 0 {
		t.Fatalf("the save sent %d blobs, the ref names %d bytes: too little to check", saved.UploadedBlobs, blobBytes)
	}
	for series := range m {
		if strings.HasPrefix(series, "tekton_cache_store_errors_total") {
			t.Errorf("a store error counted: %s", series)
		}
	}
	// Each request is in its route's latency histogram once.
	perRoute := map[string]float64{}
	for series, v := range m {
		if rest, ok := strings.CutPrefix(series, "tekton_cache_http_requests_total{"); ok {
			perRoute[rest[strings.Index(rest, "route="):]] += v
		}
	}
	for route, n := range perRoute {
		if got := m["tekton_cache_http_request_duration_seconds_count{"+route]; got != n {
			t.Errorf("latency of %s: %v observations for %v requests", route, got, n)
		}
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
}

// failingStore fails StatBlob and GetRef as a broken bucket would.
type failingStore struct{ store.Store }

func (s failingStore) Unwrap() store.Store { return s.Store }

func (s failingStore) StatBlob(context.Context, digest.Digest) (store.BlobInfo, error) {
	return store.BlobInfo{}, errors.New("bucket: connection reset")
}

func (s failingStore) GetRef(ctx context.Context, key string) (*store.Ref, error) {
	if strings.HasSuffix(key, "broken") {
		return nil, errors.New("bucket: timeout")
	}
	return s.Store.GetRef(ctx, key)
}

// TestMetricsStoreErrors: the backing store's failures count by
// operation; a miss and a malformed request do not.
func TestMetricsStoreErrors(t *testing.T) {
	f := newFixture(t, failingStore{memory.NewStore(t.Name())}, server.Options{})
	d := digest.FromBytes([]byte("x"))
	f.want(http.StatusBadGateway, "", "HEAD", blobPath(d), mainToken, nil)
	f.want(http.StatusBadGateway, httpapi.CodeStore, "GET", httpapi.RefsPath+"broken", mainToken, nil)
	f.want(http.StatusNotFound, "", "GET", httpapi.RefsPath+"absent", mainToken, nil)
	f.want(http.StatusBadRequest, "", "HEAD", httpapi.BlobsPath+"nothex", mainToken, nil)
	m := f.scrape()
	for series, want := range map[string]float64{
		`tekton_cache_store_errors_total{op="stat_blob"}`:                                  1,
		`tekton_cache_store_errors_total{op="get_ref"}`:                                    1,
		`tekton_cache_http_requests_total{code="502",method="HEAD",` + blobRoute + `}`:     1,
		`tekton_cache_http_requests_total{code="400",method="HEAD",` + blobRoute + `}`:     1,
		`tekton_cache_http_requests_total{code="502",method="GET",route="/v1/refs/{key}"}`: 1,
		`tekton_cache_http_requests_total{code="404",method="GET",route="/v1/refs/{key}"}`: 1,
		`tekton_cache_ref_lookups_total{result="miss",scope="main"}`:                       1,
		`tekton_cache_http_request_duration_seconds_count{` + blobRoute + `}`:              2,
		`tekton_cache_http_request_duration_seconds_bucket{` + blobRoute + `,le="+Inf"}`:   2,
		`tekton_cache_http_request_duration_seconds_count{route="/v1/refs/{key}"}`:         2,
		// Never a raw path as a route.
		`tekton_cache_http_request_duration_seconds_count{route="/v1/refs/absent"}`:         -1,
		`tekton_cache_http_request_duration_seconds_count{route="/v1/blobs/sha256/nothex"}`: -1,
	} {
		got, ok := m[series]
		switch {
		case want < 0 && ok:
			t.Errorf("%s present: %v", series, got)
		case want > 0 && got != want:
			t.Errorf("%s = %v (present: %v), want %v", series, got, ok, want)
		}
	}
	// A method that is no HTTP method is "other", and so is an unknown path's route.
	f.want(http.StatusNotFound, httpapi.CodeNotFound, "BREW", "/coffee/"+d.Hex(), "", nil)
	if got := f.scrape()[`tekton_cache_http_requests_total{code="404",method="other",route="/"}`]; got != 1 {
		t.Errorf("BREW /coffee/...: counted %v times under method other, route /; want 1", got)
	}
}

// TestMetricsDisabled: Options.DisableMetrics leaves /metrics out.
func TestMetricsDisabled(t *testing.T) {
	f := newFixture(t, memory.NewStore(t.Name()), server.Options{DisableMetrics: true})
	f.want(http.StatusNotFound, httpapi.CodeNotFound, "GET", server.MetricsPath, "", nil)
}

// logLines decodes the JSON lines of an access log.
func logLines(t *testing.T, text string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestAccessLog: one JSON line per request with its method, route, status,
// bytes, duration, principal, remote address and request id (the client's
// sane one, else a new one the answer carries); never the token, the
// Authorization header or a query string; a failure's error in its line
// and not in Logf; probes and scrapes not at info level.
func TestAccessLog(t *testing.T) {
	var logs testserver.SyncBuffer
	var logf bytes.Buffer
	f := newFixture(t, memory.NewStore(t.Name()), server.Options{
		AccessLog: slog.New(slog.NewJSONHandler(&logs, nil)),
		Logf:      func(format string, args ...any) { fmt.Fprintf(&logf, format+"\n", args...) },
	})
	data := []byte("a blob of the access log")
	d := digest.FromBytes(data)
	f.want(http.StatusCreated, "", "PUT", blobPath(d), mainToken, data, "X-Request-Id", "build-42.step:1")
	_, _, hdr := f.do("GET", httpapi.RefListPath+"?prefix=go-&secret=s3cr3t-q", prToken, nil, "X-Request-Id", "bad id {}")
	f.want(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "GET", blobPath(d), "not-a-known-token-77", nil)
	f.want(http.StatusOK, "", "GET", httpapi.HealthPath, "", nil)
	f.scrape()
	f.inFlight.Wait()

	text := logs.String()
	for _, secret := range []string{mainToken, prToken, "not-a-known-token-77", "s3cr3t-q", "Bearer", "Authorization", "secret="} {
		if strings.Contains(text, secret) {
			t.Errorf("the access log holds %q:\n%s", secret, text)
		}
	}
	lines := logLines(t, text)
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3 (none for /healthz and /metrics at info):\n%s", len(lines), text)
	}
	put, list, refused := lines[0], lines[1], lines[2]
	for k, want := range map[string]any{"msg": "request", "level": "INFO", "id": "build-42.step:1", "method": "PUT", "route": "/v1/blobs/sha256/{hex}",
		"path": blobPath(d), "status": 201.0, "bytes_in": float64(len(data)), "bytes_out": 0.0, "principal": "main-pipelines"} {
		if put[k] != want {
			t.Errorf("PUT line: %s = %v, want %v (%v)", k, put[k], want, put)
		}
	}
	for _, k := range []string{"time", "duration_s", "remote"} {
		if _, ok := put[k]; !ok {
			t.Errorf("PUT line: no %s (%v)", k, put)
		}
	}
	if !strings.HasPrefix(put["remote"].(string), "127.0.0.1:") {
		t.Errorf("remote = %v", put["remote"])
	}
	id, _ := list["id"].(string)
	if len(id) < 16 || strings.ContainsAny(id, " {}") || hdr.Get(server.HeaderRequestID) != id {
		t.Errorf("a generated request id %q (answer's: %q), for a client's insane one", id, hdr.Get(server.HeaderRequestID))
	}
	if list["path"] != httpapi.RefListPath || list["principal"] != "pull-requests" || list["bytes_out"].(float64) == 0 {
		t.Errorf("list line: %v", list)
	}
	if refused["status"] != 401.0 || refused["principal"] != "-" || !strings.HasPrefix(fmt.Sprint(refused["error"]), "unauthenticated: ") {
		t.Errorf("refused line: %v", refused)
	}
	if logf.Len() != 0 {
		t.Errorf("Logf got the failure too (it is in the access log):\n%s", logf.String())
	}
}

// pipeUpload starts a blob PUT of data whose body only the first half of
// is sent until the returned function sends the rest; answer gets the
// status (0 for a transport error).
func pipeUpload(t *testing.T, base, tok string, data []byte) (finish func(), answer <-chan int) {
	t.Helper()
	d := digest.FromBytes(data)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", base+blobPath(d), pr)
	req.ContentLength = int64(len(data))
	req.Header.Set("Authorization", "Bearer "+tok)
	ans := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ans <- 0
			return
		}
		resp.Body.Close()
		ans <- resp.StatusCode
	}()
	pw.Write(data[:len(data)/2])
	return func() { pw.Write(data[len(data)/2:]); pw.Close() }, ans
}

// until waits for cond, failing after many tries (no test depends on
// how fast the machine is: only on the bound not being reached).
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i == 3000 {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countingBody counts what is read of a request body.
type countingBody struct {
	r *bytes.Reader
	n int
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestUploadLimit: with one upload in flight and a limit of one, a second
// blob PUT gets 429 with Retry-After and the API's JSON error, without its
// body being read; once the first ends, a PUT goes through.
func TestUploadLimit(t *testing.T) {
	var logs testserver.SyncBuffer
	f := newFixture(t, memory.NewStore(t.Name()), server.Options{MaxConcurrentUploads: 1, AccessLog: slog.New(slog.NewJSONHandler(&logs, nil))})
	first := bytes.Repeat([]byte("first upload "), 50_000)
	finish, answer := pipeUpload(t, f.url, mainToken, first)
	until(t, "the first upload holds the slot", func() bool { return f.scrape()["tekton_cache_uploads_in_flight"] == 1 })

	second := []byte("the second upload")
	body := &countingBody{r: bytes.NewReader(second)}
	req, _ := http.NewRequest("PUT", f.url+blobPath(digest.FromBytes(second)), body)
	req.ContentLength = int64(len(second))
	req.Header.Set("Authorization", "Bearer "+mainToken)
	req.Header.Set("Expect", "100-continue")
	// The client waits for "100 Continue" as long as it takes: the body is
	// sent only if the server reads it.
	tr := &http.Transport{ExpectContinueTimeout: time.Hour}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var eb httpapi.ErrorBody
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" || json.Unmarshal(got, &eb) != nil || eb.Error.Code != httpapi.CodeTooManyRequests {
		t.Fatalf("a PUT over the limit: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), got)
	}
	if body.n != 0 {
		t.Errorf("the client sent %d bytes of the refused body", body.n)
	}
	if m := f.scrape(); m["tekton_cache_uploads_throttled_total"] != 1 || m[`tekton_cache_http_requests_total{code="429",method="PUT",`+blobRoute+`}`] != 1 {
		t.Errorf("429s counted: %v, %v", m["tekton_cache_uploads_throttled_total"], m[`tekton_cache_http_requests_total{code="429",method="PUT",`+blobRoute+`}`])
	}

	finish()
	if code := <-answer; code != http.StatusCreated {
		t.Fatalf("the upload that held the slot: %d", code)
	}
	f.inFlight.Wait()
	f.want(http.StatusCreated, "", "PUT", blobPath(digest.FromBytes(second)), mainToken, second)
	if m := f.scrape(); m["tekton_cache_uploads_in_flight"] != 0 {
		t.Errorf("uploads in flight after all ended: %v", m["tekton_cache_uploads_in_flight"])
	}
	var refusedIn float64 = -1
	for _, l := range logLines(t, logs.String()) {
		if l["status"] == 429.0 {
			refusedIn = l["bytes_in"].(float64)
		}
	}
	if refusedIn != 0 {
		t.Errorf("the 429's line says %v bytes in, want 0", refusedIn)
	}
}

// TestUploadStall: a blob PUT whose body stops halfway is cut after
// BodyStallTimeout, keeps nothing and frees its upload slot.
func TestUploadStall(t *testing.T) {
	f := newFixture(t, memory.NewStore(t.Name()), server.Options{MaxConcurrentUploads: 1, BodyStallTimeout: 100 * time.Millisecond})
	data := bytes.Repeat([]byte("stalled "), 100_000)
	finish, answer := pipeUpload(t, f.url, mainToken, data)
	defer finish()
	select {
	case code := <-answer:
		if code == http.StatusCreated {
			t.Fatalf("a stalled upload got %d", code)
		}
	case <-time.After(time.Minute):
		t.Fatal("a stalled upload was never cut")
	}
	f.inFlight.Wait()
	if _, err := f.st.StatBlob(t.Context(), digest.FromBytes(data)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the stalled blob: %v, want not found", err)
	}
	small := []byte("after the stall")
	f.want(http.StatusCreated, "", "PUT", blobPath(digest.FromBytes(small)), mainToken, small)
}
