package gha_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	actionscache "github.com/tonistiigi/go-actions-cache"

	"github.com/tekton-cache/tekton-cache/internal/cli"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/server/gha"
	"github.com/tekton-cache/tekton-cache/internal/server/gha/ghatest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
)

// clock is a settable clock shared by the server, the service and the GC.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func start(t *testing.T, st store.Store, c *clock) *ghatest.Env {
	o := ghatest.Options{}
	if c != nil {
		o.Server.Now, o.Service.Now, o.GHA.Now = c.Now, c.Now, c.Now
	}
	return ghatest.Start(t, st, o)
}

func keyOf(b []byte) string { return "buildkit-blob-1-" + string(digest.FromBytes(b)) }

// TestPullRequestScope: a token that writes pr and reads pr then main
// restores main's entry, and its save of the same key goes to pr: main's
// entry stays main's (v1 and v2).
func TestPullRequestScope(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		t.Run(fmt.Sprint("v2=", v2), func(t *testing.T) {
			env := start(t, store.Checked(memory.NewStore(t.Name())), nil)
			main := env.Client(t, env.Token(t, "main", "main"), v2)
			pr := env.Client(t, env.Token(t, "pr-7", "pr-7", "main"), v2)
			ctx := context.Background()
			key := "index-buildkit-1-deadbeef#1"
			if err := main.Save(ctx, key, actionscache.NewBlob([]byte("main's"))); err != nil {
				t.Fatal(err)
			}
			if e, got := ghatest.Load(t, pr, key); !v2 && e.Scope != "main" || string(got) != "main's" {
				t.Fatalf("the pr token restores %s %q, want main's entry", e.Scope, got)
			}
			if err := pr.Save(ctx, key, actionscache.NewBlob([]byte("poison"))); err != nil {
				t.Fatalf("the pr token's save (to its own scope): %v", err)
			}
			if e, got := ghatest.Load(t, main, key); !v2 && e.Scope != "main" || string(got) != "main's" {
				t.Fatalf("after the pr's save, main restores %s %q, want its own entry", e.Scope, got)
			}
			if e, got := ghatest.Load(t, pr, key); !v2 && e.Scope != "pr-7" || string(got) != "poison" {
				t.Fatalf("the pr restores %s %q, want its own entry first", e.Scope, got)
			}
		})
	}
}

// blobBytes is the number and bytes of the blobs of st.
func blobBytes(t *testing.T, st store.Store) (int, int64) {
	bl, _ := store.As[store.BlobLister](st)
	blobs, err := bl.ListBlobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(blobs), gc.Bytes(blobs)
}

func refsUnder(t *testing.T, st store.Store, prefix string) []string {
	keys, err := st.ListRefs(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestSameArchiveStoredOnce: one archive saved under two keys, through v1
// and through v2, is one blob; no upload, reservation or part is left.
func TestSameArchiveStoredOnce(t *testing.T) {
	st := store.Checked(memory.NewStore(t.Name()))
	env := start(t, st, nil)
	tok := env.Token(t, "main", "main")
	archive := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // 3.2 MB: blocks in v2
	ctx := context.Background()
	if err := env.Client(t, tok, false).Save(ctx, "one", actionscache.NewBlob(archive)); err != nil {
		t.Fatal(err)
	}
	n1, b1 := blobBytes(t, st)
	if err := env.Client(t, tok, true).Save(ctx, "two", actionscache.NewBlob(archive)); err != nil {
		t.Fatal(err)
	}
	n2, b2 := blobBytes(t, st)
	if n2 != n1+1 || b2-b1 > 1000 {
		t.Fatalf("a second save of the same %d bytes: %d blobs (%d bytes), then %d (%d bytes); want one record more", len(archive), n1, b1, n2, b2)
	}
	for _, ns := range []string{"_ghu.", "_ghr.", "_ghp."} {
		if keys := refsUnder(t, st, ns); len(keys) != 0 {
			t.Errorf("left after the saves: %v", keys)
		}
	}
	for _, k := range []string{"one", "two"} {
		for _, v2 := range []bool{false, true} {
			if _, got := ghatest.Load(t, env.Client(t, tok, v2), k); !bytes.Equal(got, archive) {
				t.Fatalf("%s (v2=%v): other bytes", k, v2)
			}
		}
	}
}

// TestEviction: the GC evicts GHA entries by TTL and by size like native
// ones, ranking by the last download, and removes their blobs; an upload
// in progress is not an entry and keeps its parts.
func TestEviction(t *testing.T) {
	c := &clock{t: time.Now()}
	st := store.Checked(memory.NewStore(t.Name()))
	env := start(t, st, c)
	cl := env.Client(t, env.Token(t, "main", "main"), true)
	ctx := context.Background()
	a, b := bytes.Repeat([]byte("a"), 10_000), bytes.Repeat([]byte("b"), 10_000)
	for _, x := range [][]byte{a, b} {
		if err := cl.Save(ctx, keyOf(x), actionscache.NewBlob(x)); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Minute)
	}
	// An upload in progress: reserved, one block, not finalized.
	raw := &rawClient{t: t, base: env.URL, token: env.Token(t, "main", "main")}
	id := raw.reserveV1("in-progress")
	raw.patch(id, 0, []byte("part"))
	c.Add(time.Hour)
	ghatest.Load(t, cl, keyOf(a)) // a is now the most recently used
	collect := func(o server.CollectorOptions) {
		t.Helper()
		o.Interval, o.Holder, o.Now, o.Internal = time.Hour, "test", c.Now, gha.Internal
		col, err := server.NewCollector(st, o)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second run sweeps the blobs the first saw unnamed
			if _, _, err := col.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	collect(server.CollectorOptions{MaxSize: 15_000})
	if e, err := cl.Load(ctx, keyOf(b)); err != nil || e != nil {
		t.Fatalf("over --max-size, the least recently used entry b: %v, %v; want evicted", e, err)
	}
	ghatest.Load(t, cl, keyOf(a))
	if bl, _ := store.As[store.BlobLister](st); bl != nil {
		blobs, _ := bl.ListBlobs(ctx)
		for _, x := range blobs {
			if x.Digest == digest.FromBytes(b) {
				t.Fatal("b's archive is still in the store")
			}
		}
	}
	if len(refsUnder(t, st, "_ghp.")) != 1 {
		t.Fatal("the GC removed the part of an upload in progress")
	}
	c.Add(8 * 24 * time.Hour)
	collect(server.CollectorOptions{TTL: 7 * 24 * time.Hour})
	if keys := refsUnder(t, st, "_gha."); len(keys) != 0 {
		t.Fatalf("after the TTL: %v left", keys)
	}
}

// TestExpiredReservation: an upload never committed expires with its
// parts, and its key can be reserved again.
func TestExpiredReservation(t *testing.T) {
	c := &clock{t: time.Now()}
	st := store.Checked(memory.NewStore(t.Name()))
	env := start(t, st, c)
	raw := &rawClient{t: t, base: env.URL, token: env.Token(t, "main", "main")}
	id := raw.reserveV1("crashed")
	raw.patch(id, 0, bytes.Repeat([]byte("x"), 1000))
	n0, _ := blobBytes(t, st)
	if status, _ := raw.do("POST", gha.V1Path+"caches", `{"key":"crashed","version":"`+goVersion+`"}`, nil); status != http.StatusConflict {
		t.Fatalf("a second reserve while the first is unfinished: %d, want 409", status)
	}
	if res, err := env.Service.Expire(context.Background()); err != nil || res.Uploads != 0 {
		t.Fatalf("Expire before the TTL: %+v, %v", res, err)
	}
	c.Add(gha.DefaultReservationTTL + time.Minute)
	res, err := env.Service.Expire(context.Background())
	if err != nil || res.Uploads != 1 {
		t.Fatalf("Expire after the TTL = %+v, %v; want 1 upload", res, err)
	}
	for _, ns := range []string{"_ghu.", "_ghr.", "_ghp."} {
		if keys := refsUnder(t, st, ns); len(keys) != 0 {
			t.Errorf("left after Expire: %v", keys)
		}
	}
	if n1, _ := blobBytes(t, st); n1 != n0-2 {
		t.Errorf("blobs: %d before Expire, %d after; want the part and the upload's record removed", n0, n1)
	}
	if status, body := raw.do("PATCH", fmt.Sprintf("%scaches/%d", gha.V1Path, id), "late", map[string]string{"Content-Range": "bytes 0-3/*"}); status != http.StatusNotFound {
		t.Fatalf("a chunk for the expired upload: %d %s, want 404", status, body)
	}
	raw.reserveV1("crashed")

	// A reservation whose upload is gone (a drop cut short) goes too.
	orphan := raw.reserveV1("orphan")
	del, _ := store.As[store.Deleter](st)
	if err := del.DeleteRef(context.Background(), fmt.Sprintf("_ghu.%d", orphan)); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Service.Expire(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, k := range refsUnder(t, st, "_ghr.") {
		if strings.Contains(k, "orphan") {
			t.Fatalf("the reservation of a removed upload is left: %s", k)
		}
	}
	raw.reserveV1("orphan")
}

// goVersion is the version go-actions-cache gives every key.
const goVersion = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"

// rawClient speaks v1 by hand: the calls in the order a test wants.
type rawClient struct {
	t     *testing.T
	base  string
	token string
}

func (c *rawClient) do(method, path, body string, hdr map[string]string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func (c *rawClient) reserveV1(key string) int64 {
	c.t.Helper()
	status, body := c.do("POST", gha.V1Path+"caches", fmt.Sprintf(`{"key":%q,"version":%q}`, key, goVersion), nil)
	var r struct{ CacheID int64 }
	if status/100 != 2 || json.Unmarshal([]byte(body), &r) != nil || r.CacheID == 0 {
		c.t.Fatalf("reserve %s: %d %s", key, status, body)
	}
	return r.CacheID
}

func (c *rawClient) patch(id, off int64, data []byte) {
	c.t.Helper()
	status, body := c.do("PATCH", fmt.Sprintf("%scaches/%d", gha.V1Path, id), string(data),
		map[string]string{"Content-Type": "application/octet-stream", "Content-Range": fmt.Sprintf("bytes %d-%d/*", off, off+int64(len(data))-1)})
	if status/100 != 2 {
		c.t.Fatalf("PATCH %d at %d: %d %s", id, off, status, body)
	}
}

// TestChunksOutOfOrder: v1 chunks sent last first make the archive; a gap
// or a wrong size is refused at commit, nothing published.
func TestChunksOutOfOrder(t *testing.T) {
	env := start(t, store.Checked(memory.NewStore(t.Name())), nil)
	raw := &rawClient{t: t, base: env.URL, token: env.Token(t, "main", "main")}
	data := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	id := raw.reserveV1("ooo")
	for _, off := range []int64{30, 20, 0, 10} {
		raw.patch(id, off, data[off:min(off+10, int64(len(data)))])
	}
	if status, body := raw.do("POST", fmt.Sprintf("%scaches/%d", gha.V1Path, id), `{"size":35}`, nil); status != http.StatusBadRequest {
		t.Fatalf("a commit of the wrong size: %d %s, want 400", status, body)
	}
	if status, body := raw.do("POST", fmt.Sprintf("%scaches/%d", gha.V1Path, id), fmt.Sprintf(`{"size":%d}`, len(data)), nil); status/100 != 2 {
		t.Fatalf("commit: %d %s", status, body)
	}
	e, got := ghatest.Load(t, env.Client(t, raw.token, false), "ooo")
	if !bytes.Equal(got, data) || e.Key != "ooo" {
		t.Fatalf("the archive is %q, want %q", got, data)
	}
	gap := raw.reserveV1("gap")
	raw.patch(gap, 0, data[:10])
	raw.patch(gap, 20, data[20:])
	if status, body := raw.do("POST", fmt.Sprintf("%scaches/%d", gha.V1Path, gap), fmt.Sprintf(`{"size":%d}`, len(data)), nil); status != http.StatusBadRequest || !strings.Contains(body, "cover") {
		t.Fatalf("a commit with a gap: %d %s, want 400", status, body)
	}
	if e, err := env.Client(t, raw.token, false).Load(context.Background(), "gap"); err != nil || e != nil {
		t.Fatalf("the entry with a gap was published: %v %v", e, err)
	}
}

// TestTokensRefused: a token re-signed by another key, one whose claims
// were edited, one expired, one of alg none, one without nbf, and none at
// all are refused on every version's calls.
func TestTokensRefused(t *testing.T) {
	c := &clock{t: time.Now()}
	env := start(t, store.Checked(memory.NewStore(t.Name())), c)
	other := start(t, store.Checked(memory.NewStore(t.Name()+"-other")), nil)
	good := env.Token(t, "pr-1", "pr-1", "main")
	parts := strings.Split(good, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	edited := strings.Replace(string(claims), `\"Scope\":\"main\",\"Permission\":1`, `\"Scope\":\"main\",\"Permission\":3`, 1)
	if edited == string(claims) {
		t.Fatalf("the claims %s do not hold main's read", claims)
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(edited)) + "." + parts[2]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	c.Add(-gha.DefaultTokenTTL - time.Hour)
	expired := env.Token(t, "main", "main")
	c.Add(gha.DefaultTokenTTL + time.Hour)
	cases := map[string]string{
		"another key": other.Token(t, "main", "main"),
		"edited":      tampered,
		"expired":     expired,
		"alg none":    none,
		"none":        "",
	}
	for name, tok := range cases {
		raw := &rawClient{t: t, base: env.URL, token: tok}
		for _, call := range [][2]string{
			{"GET", gha.V1Path + "cache?keys=k&version=v"},
			{"POST", gha.V1Path + "caches"},
			{"POST", gha.TwirpPath + "CreateCacheEntry"},
			{"POST", gha.TwirpPath + "GetCacheEntryDownloadURL"},
		} {
			if status, body := raw.do(call[0], call[1], `{"key":"k","version":"v"}`, nil); status != http.StatusUnauthorized {
				t.Errorf("%s token: %s %s = %d %s, want 401", name, call[0], call[1], status, body)
			}
		}
	}
	raw := &rawClient{t: t, base: env.URL, token: good}
	if status, body := raw.do("GET", gha.V1Path+"cache?keys=k&version=v", "", nil); status != http.StatusNoContent {
		t.Fatalf("the good token: %d %s, want 204 (a miss)", status, body)
	}
}

// TestSignedURLs: a download URL whose signature, key or expiry was
// changed, or that has expired, is refused (403); so is an upload URL for
// another upload.
func TestSignedURLs(t *testing.T) {
	c := &clock{t: time.Now()}
	env := start(t, store.Checked(memory.NewStore(t.Name())), c)
	tok := env.Token(t, "main", "main")
	cl := env.Client(t, tok, true)
	ctx := context.Background()
	if err := cl.Save(ctx, "k", actionscache.NewBlob([]byte("payload"))); err != nil {
		t.Fatal(err)
	}
	e, _ := ghatest.Load(t, cl, "k")
	get := func(u string) int {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(e.URL); s != http.StatusOK {
		t.Fatalf("the signed URL: %d", s)
	}
	u, _ := url.Parse(e.URL)
	edit := func(name, value string) string {
		v := *u
		q := v.Query()
		q.Set(name, value)
		v.RawQuery = q.Encode()
		return v.String()
	}
	sum := sha256.Sum256([]byte("x"))
	bad := map[string]string{
		"signature": edit("tc-sig", hex.EncodeToString(sum[:])),
		"key":       edit("tc-key", "_gha.main.0000000000000000.other"),
		"size":      edit("tc-size", "3"),
		"expiry":    edit("tc-exp", fmt.Sprint(c.Now().Add(100*time.Hour).Unix())),
		"digest":    strings.Replace(e.URL, u.Path, "/gha/blob/d/"+hex.EncodeToString(sum[:]), 1),
	}
	for name, b := range bad {
		if s := get(b); s != http.StatusForbidden {
			t.Errorf("a URL with another %s: %d, want 403", name, s)
		}
	}
	c.Add(gha.DefaultURLTTL + time.Minute)
	if s := get(e.URL); s != http.StatusForbidden {
		t.Errorf("an expired URL: %d, want 403", s)
	}
	// An upload URL names its upload: another id is refused.
	raw := &rawClient{t: t, base: env.URL, token: env.Token(t, "main", "main")}
	_, body := raw.do("POST", gha.TwirpPath+"CreateCacheEntry", `{"key":"up","version":"v"}`, nil)
	var cr struct {
		SignedUploadURL string `json:"signed_upload_url"`
	}
	json.Unmarshal([]byte(body), &cr)
	uu, _ := url.Parse(cr.SignedUploadURL)
	uu.Path += "1"
	req, _ := http.NewRequest("PUT", uu.String(), strings.NewReader("x"))
	req.Header.Set("x-ms-blob-type", "BlockBlob")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("x-ms-error-code") != "AuthenticationFailed" {
		t.Fatalf("an upload URL for another id: %d %s, want 403 AuthenticationFailed", resp.StatusCode, resp.Header.Get("x-ms-error-code"))
	}
}

// TestTokenExchange: cache serve token trades a static token of the
// tokens file for a runtime token with its scopes, which go-actions-cache
// takes; an unknown token gets none.
func TestTokenExchange(t *testing.T) {
	const static = "s3cr3t-pr-token"
	sum := sha256.Sum256([]byte(static))
	toks, err := server.ParseTokens(fmt.Appendf(nil, "tokens:\n  - name: pr\n    sha256: %x\n    write: pr-1\n    read: [pr-1, main]\n", sum))
	if err != nil {
		t.Fatal(err)
	}
	env := ghatest.Start(t, store.Checked(memory.NewStore(t.Name())), ghatest.Options{Server: server.Options{Authenticator: toks}})
	run := func(tok string) (int, string, string) {
		t.Setenv("CACHE_TOKEN", tok)
		var out, errb bytes.Buffer
		code := cli.Execute(context.Background(), []string{"serve", "token", "--server", env.URL}, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, stderr := run(static)
	if code != 0 {
		t.Fatalf("cache serve token: exit %d: %s", code, stderr)
	}
	if strings.Contains(stderr, static) {
		t.Fatal("the credential is on stderr")
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	c := env.Client(t, lines[len(lines)-1], true)
	want := []actionscache.Scope{{Scope: "pr-1", Permission: 3}, {Scope: "main", Permission: 1}}
	if got := c.Scopes(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the runtime token's scopes = %v, want %v", got, want)
	}
	if err := c.Save(context.Background(), "k", actionscache.NewBlob([]byte("x"))); err != nil {
		t.Fatalf("a save with the runtime token: %v", err)
	}
	if code, _, stderr := run("wrong"); code == 0 || !strings.Contains(stderr, "401") {
		t.Fatalf("an unknown token: exit %d, %s; want a 401", code, stderr)
	}
}

// TestMetricsAndStatus: GHA hits and misses are counted by the caller's
// first scope in /metrics; the status page lists a GHA entry under its
// scope and key, and leaves an upload in progress out.
func TestMetricsAndStatus(t *testing.T) {
	env := ghatest.Start(t, store.Checked(memory.NewStore(t.Name())), ghatest.Options{Server: server.Options{StatusPage: true}})
	tok := env.Token(t, "main", "main")
	cl := env.Client(t, tok, true)
	ctx := context.Background()
	if err := cl.Save(ctx, "index-buildkit-1-0badf00d#1", actionscache.NewBlob([]byte("idx"))); err != nil {
		t.Fatal(err)
	}
	ghatest.Load(t, cl, "index-buildkit-1-0badf00d#")
	if e, err := cl.Load(ctx, "missing"); e != nil || err != nil {
		t.Fatal(e, err)
	}
	(&rawClient{t: t, base: env.URL, token: tok}).reserveV1("in-progress-key")
	get := func(path string) string {
		resp, err := http.Get(env.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return string(data)
	}
	m := get("/metrics")
	for _, want := range []string{`tekton_cache_gha_lookups_total{result="hit",scope="main"} 1`, `tekton_cache_gha_lookups_total{result="miss",scope="main"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	page := get("/")
	if !strings.Contains(page, "gha index-buildkit-1-0badf00d#1") || strings.Contains(page, "in-progress-key") || strings.Contains(page, "_ghu.") {
		t.Errorf("the status page should list the GHA entry and no upload:\n%s", page)
	}
}

// TestCorruptArchiveNeverCompletes: when the store's bytes of an archive
// are not its digest (a damaged or forged store), a download of the whole
// archive is cut before its last byte, through the signed URL and through
// go-actions-cache: a client that checks nothing (@actions/cache) never
// completes a download of wrong bytes.
func TestCorruptArchiveNeverCompletes(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, "file://"+dir)
	env := start(t, st, nil)
	tok := env.Token(t, "main", "main")
	cl := env.Client(t, tok, true)
	ctx := context.Background()
	archive := bytes.Repeat([]byte("an archive of bytes "), 10_000)
	if err := cl.Save(ctx, "k", actionscache.NewBlob(archive)); err != nil {
		t.Fatal(err)
	}
	e, got := ghatest.Load(t, cl, "k")
	if !bytes.Equal(got, archive) {
		t.Fatal("the archive does not read back before it is damaged")
	}
	// Flip one byte of the blob where the directory store keeps it.
	hexd := digest.FromBytes(archive).Hex()
	var damaged bool
	filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err == nil && !de.IsDir() && strings.Contains(p, hexd) {
			data, rerr := os.ReadFile(p)
			if rerr == nil && len(data) == len(archive) {
				data[len(data)/2] ^= 0xff
				damaged = os.WriteFile(p, data, 0o644) == nil
			}
		}
		return nil
	})
	if !damaged {
		t.Fatal("the archive's blob was not found in the store's directory")
	}
	resp, err := http.Get(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr == nil || len(body) >= len(archive) {
		t.Fatalf("a damaged archive was sent whole: %d of %d bytes, read error %v", len(body), len(archive), rerr)
	}
	if e2, err := cl.Load(ctx, "k"); err == nil && e2 != nil {
		var buf bytes.Buffer
		if err := e2.WriteTo(ctx, &buf); err == nil {
			t.Fatalf("go-actions-cache read the damaged archive without an error (%d bytes)", buf.Len())
		}
	}
}
