package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
)

// Tokens of the tests, of a ServiceAccount token's shape (three base64url
// parts): the API server below knows saToken and refuses the others.
const (
	saToken      = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaS9wciJ9.c2lnbmF0dXJlLW9mLXBy"
	expiredToken = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJleHBpcmVkIn0.c2lnbmF0dXJlLWV4cGlyZWQ"
	flakyToken   = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmbGFreSJ9.c2lnbmF0dXJlLWZsYWt5"
	adminToken   = "kubeconfig-bearer-7d1f"
)

// fakeAPIServer answers TokenReviews on 127.0.0.1 as the Kubernetes API
// does (JSON over HTTP) and records the reviews' specs.
type fakeAPIServer struct {
	mu    sync.Mutex
	specs []authnv1.TokenReviewSpec
	auths []string
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != "POST" || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.Error(w, "no such API", http.StatusNotFound)
		return
	}
	var tr authnv1.TokenReview
	if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.specs = append(f.specs, tr.Spec)
	f.auths = append(f.auths, r.Header.Get("Authorization"))
	f.mu.Unlock()
	switch tr.Spec.Token {
	case flakyToken:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd is away","code":500}`)
		return
	case saToken:
		if len(tr.Spec.Audiences) == 1 {
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences,
				User: authnv1.UserInfo{Username: "system:serviceaccount:ci:pr-42"}}
		}
	default:
		tr.Status.Error = "service account token has expired"
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(tr)
}

// kubeconfig writes a kubeconfig for the API server at url, whose
// certificate is cert (client-go sends credentials over TLS only).
func kubeconfig(t *testing.T, url string, cert *x509.Certificate) string {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	ca := ""
	if cert != nil {
		ca = base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	}
	os.WriteFile(path, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q, certificate-authority-data: %q}}]
users: [{name: cache-serve, user: {token: %s}}]
contexts: [{name: fake, context: {cluster: fake, user: cache-serve}}]
current-context: fake
`, url, ca, adminToken), 0o600)
	return path
}

// saTokensFile writes a tokens file: ci's ServiceAccounts write pr and
// read pr, then main.
func saTokensFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	os.WriteFile(path, []byte("serviceAccounts:\n  - {name: ci/*, write: pr, read: [pr, main]}\n"), 0o600)
	return path
}

// TestTokenReview: with --token-review and --kubeconfig, cache-serve asks
// the API server of the kubeconfig (with its credentials) to review a
// ServiceAccount token for --token-audience; an accepted one writes, an
// expired one is 401, an API failure 503; no token reaches the log.
func TestTokenReview(t *testing.T) {
	api := &fakeAPIServer{}
	ts := httptest.NewTLSServer(api)
	t.Cleanup(ts.Close)
	base, sigterm, done, logs := start(t, "--store", "file://"+t.TempDir(), "--tokens-file", saTokensFile(t),
		"--token-review", "--kubeconfig", kubeconfig(t, ts.URL, ts.Certificate()), "--token-audience", "cache-ci")

	put := func(tok string) *http.Response {
		data := []byte("a blob")
		req, _ := http.NewRequest("PUT", base+httpapi.BlobsPath+digest.FromBytes(data).Hex(), bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := put(saToken); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT with the ServiceAccount's token: %d, want 201\n%s", resp.StatusCode, logs)
	}
	if resp := put(expiredToken); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("PUT with an expired token: %d, want 401", resp.StatusCode)
	}
	if resp := put(flakyToken); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("PUT while the API server fails: %d, want 503 with Retry-After", resp.StatusCode)
	}
	sigterm()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.specs) != 3 {
		t.Fatalf("%d TokenReviews, want 3", len(api.specs))
	}
	for i, spec := range api.specs {
		if len(spec.Audiences) != 1 || spec.Audiences[0] != "cache-ci" || api.auths[i] != "Bearer "+adminToken {
			t.Errorf("TokenReview %d: audiences %v, Authorization %q; want [cache-ci] and the kubeconfig's token", i, spec.Audiences, api.auths[i])
		}
	}
	out := logs.String()
	if !strings.Contains(out, `TokenReview on`) || !strings.Contains(out, "etcd is away") {
		t.Errorf("the log does not say TokenReview is on, or why a review failed:\n%s", out)
	}
	for _, tok := range []string{saToken, expiredToken, flakyToken, adminToken} {
		if strings.Contains(out, tok) {
			t.Errorf("the log holds a token:\n%s", out)
		}
	}
}

// TestTokenReviewMisconfigured: every combination of the auth flags that
// cannot work exits 2 with one line saying what to change.
func TestTokenReviewMisconfigured(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a pod
	store := "file://" + t.TempDir()
	static := filepath.Join(t.TempDir(), "static.yaml")
	os.WriteFile(static, fmt.Appendf(nil, "tokens:\n  - {name: ci, sha256: %s, write: main}\n", digest.FromBytes([]byte("tok")).Hex()), 0o600)
	sas := saTokensFile(t)
	kc := kubeconfig(t, "https://127.0.0.1:1", nil)
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--token-review"}, "--token-review needs --tokens-file with serviceAccounts"},
		{[]string{"--token-review", "--tokens-file", static}, "no serviceAccounts entries"},
		{[]string{"--tokens-file", sas}, "pass --token-review"},
		{[]string{"--kubeconfig", kc, "--tokens-file", static}, "--kubeconfig is used only with --token-review"},
		{[]string{"--token-review", "--tokens-file", sas}, "run in a pod, or pass --kubeconfig"},
		{[]string{"--token-review", "--tokens-file", sas, "--kubeconfig", "/no/such/kubeconfig"}, "--kubeconfig /no/such/kubeconfig"},
		{[]string{"--token-review", "--tokens-file", sas, "--kubeconfig", kc, "--token-audience", ""}, "needs a --token-audience"},
	} {
		wantExit(t, append(tc.args, "--store", store), 2, tc.says)
	}
	t.Setenv("CACHE_TOKEN_REVIEW", "maybe")
	wantExit(t, []string{"--store", store}, 2, "CACHE_TOKEN_REVIEW")
}

// TestRuntimeFailureExits1: a failure that is not a misconfiguration
// (the address is taken) exits 1.
func TestRuntimeFailureExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wantExit(t, []string{"--listen", ln.Addr().String(), "--store", "file://" + t.TempDir(), "--allow-unauthenticated-reads"}, 1, "address already in use")
}
