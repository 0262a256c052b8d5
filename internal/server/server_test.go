package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
)

// The tokens of the tests: main's pipelines write main; pull requests
// write pr and read pr, then main; a reader only reads main.
const (
	mainToken   = "main-token-1f7c2e"
	prToken     = "pr-token-9a03bd"
	readerToken = "reader-token-55e1a0"
)

func sum(tok string) string { return digest.FromBytes([]byte(tok)).Hex() }

var tokensYAML = fmt.Sprintf(`tokens:
  - name: main-pipelines
    sha256: %s
    write: main
  - name: pull-requests
    sha256: %s
    write: pr
    read: [pr, main]
  - name: reader
    sha256: %s
    read: [main]
`, sum(mainToken), sum(prToken), sum(readerToken))

type fixture struct {
	t   *testing.T
	st  store.Store
	url string
	// inFlight counts the requests being served.
	inFlight sync.WaitGroup
}

func newFixture(t *testing.T, st store.Store, o server.Options) *fixture {
	t.Helper()
	if o.Authenticator == nil {
		a, err := server.ParseTokens([]byte(tokensYAML))
		if err != nil {
			t.Fatal(err)
		}
		o.Authenticator = a
	}
	srv, err := server.New(st, o)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, st: st}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.inFlight.Add(1)
		defer f.inFlight.Done()
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	f.url = ts.URL
	return f
}

// do sends a request and returns the status, the body and the headers.
func (f *fixture) do(method, path, tok string, body []byte, hdr ...string) (int, string, http.Header) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Header
}

func (f *fixture) want(wantStatus int, wantCode string, method, path, tok string, body []byte, hdr ...string) string {
	f.t.Helper()
	status, got, _ := f.do(method, path, tok, body, hdr...)
	if status != wantStatus || (wantCode != "" && !strings.Contains(got, `"code":"`+wantCode+`"`)) {
		f.t.Fatalf("%s %s: %d %s, want %d %s", method, path, status, got, wantStatus, wantCode)
	}
	return got
}

func blobPath(d digest.Digest) string { return httpapi.BlobsPath + d.Hex() }

// putRef puts a ref of key naming new blobs, with tok, and returns it.
func (f *fixture) putRef(tok, key string, wantStatus int) *store.Ref {
	f.t.Helper()
	ref := storetest.NewRef(f.t, f.st, key, time.Now().Truncate(time.Millisecond), 1)
	body, _ := json.Marshal(ref)
	f.want(wantStatus, "", "PUT", httpapi.RefsPath+key, tok, body)
	return ref
}

func (f *fixture) getRef(tok, key string) (*store.Ref, string) {
	f.t.Helper()
	status, body, h := f.do("GET", httpapi.RefsPath+key, tok, nil)
	if status != http.StatusOK {
		f.t.Fatalf("GET ref %s: %d %s", key, status, body)
	}
	ref, err := store.DecodeRef(key, []byte(body))
	if err != nil {
		f.t.Fatal(err)
	}
	return ref, h.Get(httpapi.HeaderScope)
}

// TestPullRequestReadsMainCannotOverwrite: a pull request's token reads
// main's entry; its write of the same key goes to its own scope, and main
// still reads its own entry.
func TestPullRequestReadsMainCannotOverwrite(t *testing.T) {
	f := newFixture(t, memory.NewStore("t"), server.Options{})
	mainRef := f.putRef(mainToken, "go-abc", http.StatusCreated)
	if got, scope := f.getRef(prToken, "go-abc"); got.Index != mainRef.Index || scope != "main" {
		t.Fatalf("the PR reads %v from scope %q, want main's entry", got.Index, scope)
	}
	prRef := f.putRef(prToken, "go-abc", http.StatusCreated)
	if got, scope := f.getRef(mainToken, "go-abc"); got.Index != mainRef.Index || scope != "main" {
		t.Fatalf("after the PR's write main reads %v from %q: the PR replaced main's entry", got.Index, scope)
	}
	if got, scope := f.getRef(prToken, "go-abc"); got.Index != prRef.Index || scope != "pr" {
		t.Fatalf("the PR reads %v from %q, want its own entry first", got.Index, scope)
	}
	// The backing store holds one ref per scope, and no bare key.
	keys, err := f.st.ListRefs(t.Context(), "")
	if err != nil || strings.Join(keys, " ") != "main.go-abc pr.go-abc" && strings.Join(keys, " ") != "pr.go-abc main.go-abc" {
		t.Fatalf("backing keys = %v, %v", keys, err)
	}
	// The listing merges the scopes: the key once, in the scope a read finds.
	var list httpapi.RefList
	json.Unmarshal([]byte(f.want(200, "", "GET", httpapi.RefListPath+"?prefix=go-", prToken, nil)), &list)
	if len(list.Refs) != 1 || list.Refs[0].Key != "go-abc" || list.Refs[0].Scope != "pr" || list.Refs[0].Modified.IsZero() {
		t.Fatalf("PR's listing = %+v", list)
	}
	// A reader may read main, and write nothing.
	f.getRef(readerToken, "go-abc")
	f.want(http.StatusForbidden, httpapi.CodeForbidden, "PUT", httpapi.RefsPath+"go-abc", readerToken, []byte("{}"))
	f.want(http.StatusForbidden, httpapi.CodeForbidden, "PUT", blobPath(digest.FromBytes(nil)), readerToken, []byte{})
}

// TestUnauthenticated: without a token nothing is allowed by default; the
// allow options open reads, then writes, of the anonymous scope only. A
// wrong token is refused even then, and never echoed.
func TestUnauthenticated(t *testing.T) {
	data := []byte("a blob")
	d := digest.FromBytes(data)
	f := newFixture(t, memory.NewStore("t"), server.Options{})
	f.want(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "PUT", blobPath(d), "", data)
	f.want(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "GET", httpapi.RefsPath+"go-abc", "", nil)
	f.want(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "GET", httpapi.RefListPath, "", nil)
	f.want(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "POST", httpapi.MissingPath, "", []byte(`{"digests":[]}`))
	f.putRef(mainToken, "go-abc", http.StatusCreated)

	f = newFixture(t, f.st, server.Options{AllowUnauthenticatedReads: true, AnonymousScope: "main"})
	if got, scope := f.getRef("", "go-abc"); scope != "main" || got.Key != "go-abc" {
		t.Fatalf("anonymous read of main = %v, %q", got, scope)
	}
	f.want(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "PUT", blobPath(d), "", data)
	body := f.want(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "GET", httpapi.RefsPath+"go-abc", "not-a-token-3e8f", nil)
	if strings.Contains(body, "not-a-token-3e8f") {
		t.Fatalf("the answer echoes the token: %s", body)
	}

	f = newFixture(t, memory.NewStore("t"), server.Options{AllowUnauthenticatedReads: true, AllowUnauthenticatedWrites: true})
	f.want(http.StatusCreated, "", "PUT", blobPath(d), "", data)
	f.putRef("", "go-abc", http.StatusCreated)
	if keys, _ := f.st.ListRefs(t.Context(), ""); len(keys) != 1 || keys[0] != server.DefaultAnonymousScope+".go-abc" {
		t.Fatalf("an anonymous write went to %v, want the default scope", keys)
	}
}

// TestPutBlob: 201 on commit, 200 when held already (without reading the
// body when asked to 100-continue), 400 with nothing kept for bytes of
// another digest or size, 411 without a length, 413 over the limit; over
// a store that stages (a directory) and one that does not (memory).
func TestPutBlob(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) (store.Store, func() []string){
		"directory": func(t *testing.T) (store.Store, func() []string) {
			dir := t.TempDir()
			b, err := local.New(dir)
			if err != nil {
				t.Fatal(err)
			}
			return store.Checked(store.WithRetries(store.NewObjectStore(b), store.Options{})), func() []string { return files(dir) }
		},
		"memory": func(t *testing.T) (store.Store, func() []string) {
			b := memory.New("t")
			return store.NewObjectStore(b), func() []string { names, _ := b.List(t.Context(), ""); return names }
		},
	} {
		t.Run(name, func(t *testing.T) {
			st, leftovers := open(t)
			f := newFixture(t, st, server.Options{MaxBodySize: 1 << 20})
			data, d := storetest.RandomBlob(t, 300_000)
			bad := bytes.Clone(data)
			bad[len(bad)-1] ^= 1
			f.want(http.StatusBadRequest, httpapi.CodeMismatch, "PUT", blobPath(d), mainToken, bad)
			f.want(http.StatusBadRequest, httpapi.CodeMismatch, "PUT", blobPath(d), mainToken, data[:len(data)-1])
			f.inFlight.Wait()
			if left := leftovers(); len(left) != 0 {
				t.Fatalf("rejected puts left %v", left)
			}
			f.want(http.StatusCreated, "", "PUT", blobPath(d), mainToken, data)
			if got := readAll(t, st, d); !bytes.Equal(got, data) {
				t.Fatal("the blob reads back different")
			}
			// Held already: the body is not read.
			counted := &countingReader{r: bytes.NewReader(data)}
			req, _ := http.NewRequest("PUT", f.url+blobPath(d), counted)
			req.ContentLength = int64(len(data))
			req.Header.Set("Authorization", "Bearer "+mainToken)
			req.Header.Set("Expect", "100-continue")
			tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("PUT of a blob held: %v, %v", resp, err)
			}
			resp.Body.Close()
			if n := counted.n.Load(); n != 0 {
				t.Fatalf("PUT of a blob held sent %d bytes of its body, want 0", n)
			}

			big, bd := storetest.RandomBlob(t, 1<<20+1)
			f.want(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "PUT", blobPath(bd), mainToken, big)
			req, _ = http.NewRequest("PUT", f.url+blobPath(d), io.MultiReader(bytes.NewReader(data))) // no length: chunked
			req.Header.Set("Authorization", "Bearer "+mainToken)
			if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusLengthRequired {
				t.Fatalf("chunked PUT: %v, %v; want 411", resp, err)
			}
			f.want(http.StatusBadRequest, httpapi.CodeInvalid, "PUT", httpapi.BlobsPath+"nothex", mainToken, data)
		})
	}
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func files(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func readAll(t *testing.T, st store.Store, d digest.Digest) []byte {
	t.Helper()
	rc, err := st.GetBlob(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestGetBlobRange: a Range gives 206 and the bytes from there; one past
// the end 416.
func TestGetBlobRange(t *testing.T) {
	f := newFixture(t, memory.NewStore("t"), server.Options{})
	desc := storetest.PutBlob(t, f.st, []byte("0123456789"))
	status, body, h := f.do("GET", blobPath(desc.Digest), readerToken, nil, "Range", "bytes=4-")
	if status != http.StatusPartialContent || body != "456789" || h.Get("Content-Range") != "bytes 4-9/10" {
		t.Fatalf("Range bytes=4-: %d %q %q", status, body, h.Get("Content-Range"))
	}
	status, body, _ = f.do("GET", blobPath(desc.Digest), readerToken, nil, "Range", "bytes=2-3")
	if status != http.StatusPartialContent || body != "23" {
		t.Fatalf("Range bytes=2-3: %d %q", status, body)
	}
	f.want(http.StatusRequestedRangeNotSatisfiable, httpapi.CodeRangeInvalid, "GET", blobPath(desc.Digest), readerToken, nil, "Range", "bytes=10-")
	status, body, h = f.do("GET", blobPath(desc.Digest), readerToken, nil)
	if status != 200 || body != "0123456789" || h.Get("ETag") != `"`+string(desc.Digest)+`"` {
		t.Fatalf("GET: %d %q %v", status, body, h)
	}
	f.want(http.StatusNotFound, httpapi.CodeNotFound, "GET", blobPath(digest.FromBytes([]byte("none"))), readerToken, nil)
}

// TestPutRefNeedsItsBlobs: a ref naming a blob the store lacks, or naming
// one at a wrong size, is refused and not published.
func TestPutRefNeedsItsBlobs(t *testing.T) {
	f := newFixture(t, memory.NewStore("t"), server.Options{})
	ref := storetest.NewRef(t, f.st, "go-abc", time.Now(), 1)
	ref.Packs = append(ref.Packs, format.Descriptor{Digest: digest.FromBytes([]byte("never put")), Size: 9})
	body, _ := json.Marshal(ref)
	f.want(http.StatusFailedDependency, httpapi.CodeMissingBlob, "PUT", httpapi.RefsPath+"go-abc", mainToken, body)
	ref.Packs = ref.Packs[:1]
	ref.Packs[0].Size++
	body, _ = json.Marshal(ref)
	f.want(http.StatusFailedDependency, httpapi.CodeMissingBlob, "PUT", httpapi.RefsPath+"go-abc", mainToken, body)
	if keys, _ := f.st.ListRefs(t.Context(), ""); len(keys) != 0 {
		t.Fatalf("refused refs were published: %v", keys)
	}
	// A ref whose key is not the URL's is refused too.
	ref.Packs[0].Size--
	body, _ = json.Marshal(ref)
	f.want(http.StatusBadRequest, httpapi.CodeInvalid, "PUT", httpapi.RefsPath+"go-other", mainToken, body)
	f.want(http.StatusCreated, "", "PUT", httpapi.RefsPath+"go-abc", mainToken, body)
}

// TestConcurrentRefWriters: many writers of one key, in two scopes; each
// scope ends with one of the refs written to it, whole.
func TestConcurrentRefWriters(t *testing.T) {
	f := newFixture(t, memory.NewStore("t"), server.Options{})
	const n = 16
	refs := map[string][]*store.Ref{}
	bodies := map[string][][]byte{}
	for _, tok := range []string{mainToken, prToken} {
		for range n {
			r := storetest.NewRef(t, f.st, "go-raced", time.Now(), 2)
			b, _ := json.Marshal(r)
			refs[tok] = append(refs[tok], r)
			bodies[tok] = append(bodies[tok], b)
		}
	}
	var wg sync.WaitGroup
	statuses := make(chan int, 2*n)
	for _, tok := range []string{mainToken, prToken} {
		for i := range n {
			wg.Go(func() {
				status, _, _ := f.do("PUT", httpapi.RefsPath+"go-raced", tok, bodies[tok][i])
				statuses <- status
			})
		}
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusCreated {
			t.Fatalf("a concurrent PUT answered %d", s)
		}
	}
	for _, tok := range []string{mainToken, prToken} {
		got, _ := f.getRef(tok, "go-raced")
		found := false
		for _, r := range refs[tok] {
			found = found || (got.Index == r.Index && len(got.Packs) == 2 && got.Packs[1] == r.Packs[1])
		}
		if !found {
			t.Fatalf("after concurrent writes the ref is none of those its scope wrote: %+v", got)
		}
	}
}

// TestMissingBlobs answers in the request's order.
func TestMissingBlobs(t *testing.T) {
	f := newFixture(t, memory.NewStore("t"), server.Options{})
	held := storetest.PutBlob(t, f.st, []byte("held")).Digest
	a, b := digest.FromBytes([]byte("a")), digest.FromBytes([]byte("b"))
	req, _ := json.Marshal(httpapi.MissingRequest{Digests: []digest.Digest{b, held, a}})
	body := f.want(200, "", "POST", httpapi.MissingPath, readerToken, req)
	var resp httpapi.MissingResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil || fmt.Sprint(resp.Missing) != fmt.Sprint([]digest.Digest{b, a}) {
		t.Fatalf("missing = %s, %v", body, err)
	}
	f.want(http.StatusBadRequest, httpapi.CodeInvalid, "POST", httpapi.MissingPath, readerToken, []byte(`{"digests":["sha256:xyz"]}`))
}

// TestScopedKeys: (scope, key) -> backing key is one to one, and a key
// too long for its scope is refused.
func TestScopedKeys(t *testing.T) {
	seen := map[string][2]string{}
	for _, scope := range []string{"a", "a-b", "ab", "main", "mai", "pr-1", "pr"} {
		for _, key := range []string{"b", "b.c", "n.x", "in.x", "1.x", "-x", "main.x", "_x", "x"} {
			sk, err := server.ScopedKey(scope, key)
			if err != nil {
				continue // an invalid key
			}
			if prev, dup := seen[sk]; dup {
				t.Fatalf("(%s, %s) and (%s, %s) both map to %s", prev[0], prev[1], scope, key, sk)
			}
			seen[sk] = [2]string{scope, key}
		}
	}
	long := strings.Repeat("k", server.MaxKeyLen("main"))
	if _, err := server.ScopedKey("main", long); err != nil {
		t.Fatalf("a key of MaxKeyLen: %v", err)
	}
	if _, err := server.ScopedKey("main", long+"k"); err == nil || !strings.Contains(err.Error(), "at most 123 characters") {
		t.Fatalf("a key over MaxKeyLen: %v", err)
	}
	for _, bad := range []string{"", "Main", "a.b", "a_b", "-a", strings.Repeat("s", 25)} {
		if server.ValidateScope(bad) == nil {
			t.Errorf("scope %q accepted", bad)
		}
	}
}

// TestParseTokens reads YAML and JSON and refuses what could not work.
func TestParseTokens(t *testing.T) {
	a, err := server.ParseTokens([]byte(fmt.Sprintf(`{"tokens":[{"name":"x","sha256":%q,"write":"main"}]}`, sum("t"))))
	if err != nil || a.Len() != 1 {
		t.Fatalf("JSON tokens: %v", err)
	}
	for what, doc := range map[string]string{
		"not 64 hex digits": `tokens: [{name: x, sha256: abc, write: main}]`,
		"invalid scope":     fmt.Sprintf(`tokens: [{name: x, sha256: %s, write: Main}]`, sum("t")),
		"could do nothing":  fmt.Sprintf(`tokens: [{name: x, sha256: %s}]`, sum("t")),
		"used twice":        fmt.Sprintf(`tokens: [{name: x, sha256: %s, write: a}, {name: x, sha256: %s, write: b}]`, sum("t"), sum("u")),
		"same token":        fmt.Sprintf(`tokens: [{name: x, sha256: %s, write: a}, {name: y, sha256: %s, write: b}]`, sum("t"), sum("t")),
		"field":             fmt.Sprintf(`tokens: [{name: x, sha256: %s, write: a, token: plain}]`, sum("t")),
	} {
		if _, err := server.ParseTokens([]byte(doc)); err == nil || !strings.Contains(err.Error(), what) {
			t.Errorf("%s: %v", what, err)
		}
	}
}
