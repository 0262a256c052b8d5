package server_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// saTokensYAML: main's runner writes main; every other ServiceAccount of
// ci writes pr and reads pr, then main; team/dash reads main; and one
// static token.
var saTokensYAML = fmt.Sprintf(`tokens:
  - name: static-main
    sha256: %s
    write: main
serviceAccounts:
  - name: ci/main-runner
    write: main
  - name: ci/*
    write: pr
    read: [pr, main]
  - name: team/dash
    read: [main]
`, sum(mainToken))

// jwt is a token of the shape of a ServiceAccount token, expiring at exp
// (none when zero); n tells tokens apart.
func jwt(n string, exp time.Time) string {
	claims := fmt.Sprintf(`{"sub":%q}`, n)
	if !exp.IsZero() {
		claims = fmt.Sprintf(`{"sub":%q,"exp":%d}`, n, exp.Unix())
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + "." + enc([]byte("signature-of-"+n))
}

// review is what the fake API server answers for a token.
type review struct {
	username      string   // authenticated as
	audiences     []string // nil: the audience asked for
	authenticated bool
	errMsg        string // status.error
	apiErr        error  // the API call fails
}

// kube is a fake API server's TokenReview endpoint (client-go's fake
// clientset with a reactor on "create tokenreviews").
type kube struct {
	t     *testing.T
	mu    sync.Mutex
	known map[string]review
	calls atomic.Int32
	// lastSpec is the spec of the last review.
	lastSpec authnv1.TokenReviewSpec
	// hold, when set, holds every review until it is closed.
	hold chan struct{}
}

func newKube(t *testing.T) (*kube, server.TokenReviewer) {
	k := &kube{t: t, known: map[string]review{}}
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		k.calls.Add(1)
		if k.hold != nil {
			<-k.hold
		}
		tr := action.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		k.mu.Lock()
		defer k.mu.Unlock()
		k.lastSpec = tr.Spec
		rv, ok := k.known[tr.Spec.Token]
		if rv.apiErr != nil {
			return true, nil, rv.apiErr
		}
		out := tr.DeepCopy()
		if !ok || !rv.authenticated {
			out.Status = authnv1.TokenReviewStatus{Error: rv.errMsg}
			if !ok {
				out.Status.Error = "invalid bearer token"
			}
			return true, out, nil
		}
		out.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: rv.username}, Audiences: rv.audiences}
		if rv.audiences == nil {
			out.Status.Audiences = tr.Spec.Audiences
		}
		return true, out, nil
	})
	return k, cs.AuthenticationV1().TokenReviews()
}

// sa makes a valid token of the ServiceAccount ns/name, expiring at exp.
func (k *kube) sa(ns, name string, exp time.Time) string {
	tok := jwt(ns+"/"+name, exp)
	k.set(tok, review{username: "system:serviceaccount:" + ns + ":" + name, authenticated: true})
	return tok
}

func (k *kube) set(tok string, rv review) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.known[tok] = rv
}

func newTokenReview(t *testing.T, client server.TokenReviewer, o server.TokenReviewOptions) *server.TokenReview {
	t.Helper()
	if o.Tokens == nil {
		toks, err := server.ParseTokens([]byte(saTokensYAML))
		if err != nil {
			t.Fatal(err)
		}
		o.Tokens = toks
	}
	a, err := server.NewTokenReview(client, o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func authenticate(a server.Authenticator, tok string) (*server.Principal, error) {
	r := httptest.NewRequest("GET", "/v1/refs/x", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return a.Authenticate(r)
}

// TestTokenReviewScopes: an authenticated ServiceAccount gets the scopes
// of its entry, the exact one before its namespace's; one no entry names
// is refused (403), naming it and not the token; a static token is taken
// without asking the API server.
func TestTokenReviewScopes(t *testing.T) {
	k, client := newKube(t)
	a := newTokenReview(t, client, server.TokenReviewOptions{})
	for _, tc := range []struct {
		ns, name     string
		write, reads string
	}{
		{"ci", "main-runner", "main", "main"}, // exact, over ci/*
		{"ci", "pr-runner", "pr", "pr,main"},  // ci/*
		{"team", "dash", "", "main"},
	} {
		tok := k.sa(tc.ns, tc.name, time.Time{})
		p, err := authenticate(a, tok)
		if err != nil {
			t.Fatalf("%s/%s: %v", tc.ns, tc.name, err)
		}
		if p.Name != "system:serviceaccount:"+tc.ns+":"+tc.name || p.Write != tc.write || strings.Join(p.Read, ",") != tc.reads {
			t.Errorf("%s/%s: principal %+v, want write %q read %q", tc.ns, tc.name, p, tc.write, tc.reads)
		}
	}
	if got := k.lastSpec.Audiences; len(got) != 1 || got[0] != server.DefaultTokenAudience {
		t.Errorf("the TokenReview asked for audiences %v, want [%s]", got, server.DefaultTokenAudience)
	}

	tok := k.sa("team", "other", time.Time{})
	_, err := authenticate(a, tok)
	if !errors.Is(err, server.ErrForbidden) || !strings.Contains(err.Error(), "team/other") || strings.Contains(err.Error(), tok) {
		t.Errorf("an unmapped ServiceAccount: %v, want ErrForbidden naming team/other", err)
	}

	calls := k.calls.Load()
	if p, err := authenticate(a, mainToken); err != nil || p.Name != "static-main" || p.Write != "main" {
		t.Errorf("the static token: %+v, %v", p, err)
	}
	if k.calls.Load() != calls {
		t.Error("a static token was sent to a TokenReview")
	}
}

// TestTokenReviewRefused: expired or revoked tokens, tokens not bound to
// the audience, and non-ServiceAccount users are refused (401, their
// reason in one line, never the token); a token that is no JWT is refused
// without asking.
func TestTokenReviewRefused(t *testing.T) {
	k, client := newKube(t)
	a := newTokenReview(t, client, server.TokenReviewOptions{Audience: "cache-prod"})
	expired := jwt("expired", time.Time{})
	k.set(expired, review{errMsg: "[invalid bearer token, service account token has expired]"})
	wrongAud := jwt("wrong-audience", time.Time{})
	// An API server that authenticates it but for another audience only.
	k.set(wrongAud, review{username: "system:serviceaccount:ci:main-runner", authenticated: true, audiences: []string{"tekton-cache"}})
	user := jwt("user", time.Time{})
	k.set(user, review{username: "alice@example.com", authenticated: true})
	echo := jwt("echo", time.Time{})
	k.set(echo, review{errMsg: "token " + echo + " is not valid"})
	for tok, says := range map[string]string{
		expired:                     "has expired",
		wrongAud:                    `not bound to audience "cache-prod"`,
		user:                        "not a ServiceAccount",
		echo:                        "is not valid",
		jwt("unknown", time.Time{}): "invalid bearer token",
	} {
		_, err := authenticate(a, tok)
		if !errors.Is(err, server.ErrUnauthenticated) || !strings.Contains(err.Error(), says) || strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want ErrUnauthenticated saying %q (one line, no token)", says, err, says)
		}
	}
	calls := k.calls.Load()
	if _, err := authenticate(a, "not-a-jwt"); !errors.Is(err, server.ErrUnauthenticated) || k.calls.Load() != calls {
		t.Errorf("a token that is no JWT: %v, %d TokenReviews", err, k.calls.Load()-calls)
	}
}

// clock is a settable clock for the cache.
type reviewClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *reviewClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *reviewClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestTokenReviewCache: an answer is kept, by the token's sha256, for a
// minute (less if the token expires sooner), a refusal for 10 s; after
// that the API server is asked again.
func TestTokenReviewCache(t *testing.T) {
	k, client := newKube(t)
	clk := &reviewClock{now: time.Now()}
	a := newTokenReview(t, client, server.TokenReviewOptions{Now: clk.Now})
	long := k.sa("ci", "pr-runner", clk.Now().Add(time.Hour))
	short := k.sa("ci", "short", clk.Now().Add(20*time.Second))
	bad := jwt("bad", time.Time{})
	want := func(tok string, wantCalls int32, what string) {
		t.Helper()
		before := k.calls.Load()
		authenticate(a, tok)
		if got := k.calls.Load() - before; got != wantCalls {
			t.Fatalf("%s: %d TokenReviews, want %d", what, got, wantCalls)
		}
	}
	want(long, 1, "first use")
	want(short, 1, "first use of a short-lived token")
	want(bad, 1, "first use of a bad token")
	clk.add(9 * time.Second)
	want(long, 0, "9s later")
	want(short, 0, "9s later (short-lived)")
	want(bad, 0, "9s later (refused)")
	clk.add(2 * time.Second)
	want(bad, 1, "11s later (refused)")
	clk.add(10 * time.Second) // 21s
	want(short, 1, "after the token's expiry")
	want(long, 0, "21s later")
	clk.add(38 * time.Second) // 59s
	want(long, 0, "59s later")
	clk.add(2 * time.Second) // 61s
	want(long, 1, "61s later")
}

// TestTokenReviewCacheBounded: past CacheSize answers the oldest goes.
func TestTokenReviewCacheBounded(t *testing.T) {
	k, client := newKube(t)
	a := newTokenReview(t, client, server.TokenReviewOptions{CacheSize: 3})
	var toks []string
	for i := range 4 {
		tok := k.sa("ci", fmt.Sprintf("sa-%d", i), time.Time{})
		toks = append(toks, tok)
		authenticate(a, tok)
	}
	before := k.calls.Load()
	for _, tok := range toks[1:] {
		authenticate(a, tok)
	}
	if k.calls.Load() != before {
		t.Fatalf("the 3 newest answers were not kept")
	}
	authenticate(a, toks[0])
	if k.calls.Load() != before+1 {
		t.Fatalf("the oldest answer was kept past the bound")
	}
}

// TestTokenReviewConcurrent: requests at once with one new token make one
// TokenReview. The first review is held until a second one comes, or for
// half a second: a loaded machine can only make the test pass wrongly,
// never fail wrongly.
func TestTokenReviewConcurrent(t *testing.T) {
	k, client := newKube(t)
	a := newTokenReview(t, client, server.TokenReviewOptions{})
	tok := k.sa("ci", "pr-runner", time.Time{})
	k.hold = make(chan struct{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if p, err := authenticate(a, tok); err != nil || p.Write != "pr" {
				t.Errorf("%+v, %v", p, err)
			}
		})
	}
	for deadline := time.Now().Add(500 * time.Millisecond); k.calls.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	close(k.hold)
	wg.Wait()
	if n := k.calls.Load(); n != 1 {
		t.Fatalf("%d TokenReviews for one token, want 1", n)
	}
}

// TestTokenReviewAPIError: when the API server fails the answer is 503
// with Retry-After (clients try again), it is not kept, and the log
// says why without the token, even when the API's error holds it.
func TestTokenReviewAPIError(t *testing.T) {
	k, client := newKube(t)
	logs := &testserver.SyncBuffer{}
	logf := func(format string, args ...any) { fmt.Fprintf(logs, format+"\n", args...) }
	a := newTokenReview(t, client, server.TokenReviewOptions{Logf: logf})
	tok := k.sa("ci", "pr-runner", time.Time{})
	k.set(tok, review{apiErr: fmt.Errorf("Post \"https://10.0.0.1/apis/authentication.k8s.io/v1/tokenreviews\": connection refused (body had %s)", tok)})
	f := newFixture(t, memory.NewStore("t"), server.Options{Authenticator: a, Logf: logf})
	status, body, h := f.do("GET", httpapi.RefsPath+"go-abc", tok, nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, httpapi.CodeUnavailable) || h.Get("Retry-After") == "" {
		t.Fatalf("an API failure: %d %s (Retry-After %q), want 503 %s", status, body, h.Get("Retry-After"), httpapi.CodeUnavailable)
	}
	if !strings.Contains(logs.String(), "tokenreview: ") || !strings.Contains(logs.String(), "connection refused") {
		t.Fatalf("the log does not say why:\n%s", logs)
	}
	k.set(tok, review{username: "system:serviceaccount:ci:pr-runner", authenticated: true})
	before := k.calls.Load()
	if p, err := authenticate(a, tok); err != nil || p.Write != "pr" || k.calls.Load() != before+1 {
		t.Fatalf("after the API failure: %+v, %v, %d TokenReviews (the failure must not be kept)", p, err, k.calls.Load()-before)
	}
	noTokenIn(t, logs.String()+body, tok)
}

// noTokenIn fails when s holds tok or any 12 bytes of it in a row.
func noTokenIn(t *testing.T, s, tok string) {
	t.Helper()
	for i := 0; i+12 <= len(tok); i++ {
		if strings.Contains(s, tok[i:i+12]) {
			t.Fatalf("a token's bytes %q are in:\n%s", tok[i:i+12], s)
		}
	}
}

// TestTokenReviewThroughServer: through the HTTP handler, a pull
// request's ServiceAccount reads main's entry and cannot replace it; an
// unmapped ServiceAccount is refused 403 and a refused token 401; the log
// of accepted and refused requests holds no token bytes.
func TestTokenReviewThroughServer(t *testing.T) {
	k, client := newKube(t)
	logs := &testserver.SyncBuffer{}
	logf := func(format string, args ...any) { fmt.Fprintf(logs, format+"\n", args...) }
	a := newTokenReview(t, client, server.TokenReviewOptions{Logf: logf})
	f := newFixture(t, memory.NewStore("t"), server.Options{Authenticator: a, Logf: logf})
	mainSA := k.sa("ci", "main-runner", time.Now().Add(time.Hour))
	prSA := k.sa("ci", "pr-42", time.Now().Add(time.Hour))
	stranger := k.sa("elsewhere", "builder", time.Now().Add(time.Hour))
	expired := jwt("expired", time.Time{})
	k.set(expired, review{errMsg: "service account token has expired"})

	mainRef := f.putRef(mainSA, "go-abc", http.StatusCreated)
	if got, scope := f.getRef(prSA, "go-abc"); got.Index != mainRef.Index || scope != "main" {
		t.Fatalf("the PR's ServiceAccount reads %v from %q, want main's entry", got.Index, scope)
	}
	f.putRef(prSA, "go-abc", http.StatusCreated)
	if got, scope := f.getRef(mainSA, "go-abc"); got.Index != mainRef.Index || scope != "main" {
		t.Fatalf("after the PR's save main reads %v from %q: the PR replaced main's entry", got.Index, scope)
	}
	body := f.want(http.StatusForbidden, httpapi.CodeForbidden, "PUT", blobPath(digest.FromBytes(nil)), stranger, []byte{})
	if !strings.Contains(body, "elsewhere/builder") {
		t.Errorf("the refusal of an unmapped ServiceAccount does not name it: %s", body)
	}
	body += f.want(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "GET", httpapi.RefsPath+"go-abc", expired, nil)
	if !strings.Contains(logs.String(), "elsewhere/builder") || !strings.Contains(logs.String(), "expired") {
		t.Fatalf("the log does not say who was refused and why:\n%s", logs)
	}
	for _, tok := range []string{mainSA, prSA, stranger, expired} {
		noTokenIn(t, logs.String()+body, tok)
	}
}

// TestParseServiceAccounts: the serviceAccounts of a tokens file follow
// the tokens' rules.
func TestParseServiceAccounts(t *testing.T) {
	toks, err := server.ParseTokens([]byte(`{"serviceAccounts":[{"name":"ci/x","write":"main"},{"name":"ci/*","write":"pr"}]}`))
	if err != nil || toks.ServiceAccounts().Len() != 2 || toks.Len() != 0 {
		t.Fatalf("JSON serviceAccounts: %v", err)
	}
	for _, tc := range []struct{ doc, says string }{
		{`serviceAccounts: [{name: ci, write: main}]`, "not NAMESPACE/NAME"},
		{`serviceAccounts: [{name: Ci/x, write: main}]`, "not NAMESPACE/NAME"},
		{`serviceAccounts: [{name: ci/x/y, write: main}]`, "not NAMESPACE/NAME"},
		{`serviceAccounts: [{name: ci/, write: main}]`, "not NAMESPACE/NAME"},
		{`serviceAccounts: [{name: ci/x, write: Main}]`, "invalid scope"},
		{`serviceAccounts: [{name: ci/x, read: [main, "a.b"]}]`, "invalid scope"},
		{`serviceAccounts: [{name: ci/x}]`, "could do nothing"},
		{`serviceAccounts: [{name: ci/*, write: a}, {name: ci/*, write: b}]`, "used twice"},
		{`serviceAccounts: [{name: ci/x, write: a}, {name: ci/x, read: [b]}]`, "used twice"},
		{`serviceAccounts: [{name: ci/x, write: a, namespace: ci}]`, "field namespace"},
	} {
		if _, err := server.ParseTokens([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want %q", tc.doc, err, tc.says)
		}
	}
	toks, _ = server.ParseTokens([]byte(tokensYAML))
	if _, err := server.NewTokenReview(nil, server.TokenReviewOptions{Tokens: toks}); err == nil || !strings.Contains(err.Error(), "serviceAccounts") {
		t.Errorf("TokenReview without serviceAccounts entries: %v", err)
	}
}
