package tekton

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	authv1 "k8s.io/api/authentication/v1"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// startServe runs cache-serve with args on a free 127.0.0.1 port (the
// --listen in args is replaced) and env, waits until GET /healthz answers
// 200, and returns its base URL and process.
func startServe(t *testing.T, args, env []string) (string, *testserver.Process) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return strings.HasPrefix(a, "--listen") })
	p := testserver.Start(t, serveBinary(t), append(args, "--listen="+addr), env)
	p.WaitHTTP(t, "http://"+addr+"/healthz", http.StatusOK)
	return "http://" + addr, p
}

// deploymentArgs returns the container args of a build's Deployment with
// the pod's paths mapped to dir (--store=file:///data, --tokens-file, the
// tokens file written there from the Secret).
func deploymentArgs(t *testing.T, objs []Object, dir string) []string {
	t.Helper()
	s, _ := collect(objs)
	tokens := tokensFile(t, objs)
	tokensPath := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokensPath, tokens, 0o600); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range s.Deployment.Spec.Template.Spec.Containers[0].Args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case a == "--store=file:///data":
			a = "--store=file://" + filepath.Join(dir, "data")
		case name == "tokens-file":
			a = "--tokens-file=" + tokensPath
		}
		out = append(out, a)
	}
	return out
}

// fakeTokenReview is an API server that answers TokenReviews only: each
// token in users is authenticated as that user, for the audiences asked.
func fakeTokenReview(t *testing.T, users map[string]string) (kubeconfig string, audiences func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		var tr authv1.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen = append(seen, tr.Spec.Audiences...)
		mu.Unlock()
		if user, ok := users[tr.Spec.Token]; ok {
			tr.Status = authv1.TokenReviewStatus{Authenticated: true, User: authv1.UserInfo{Username: user}, Audiences: tr.Spec.Audiences}
		} else {
			tr.Status = authv1.TokenReviewStatus{Error: "invalid bearer token"}
		}
		tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenReview"
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(&tr) //nolint:errcheck // the client sees a short answer
	}))
	t.Cleanup(srv.Close)
	kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: fake, user: {}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
current-context: fake
`, srv.URL)
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return kubeconfig, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(seen) }
}

// cacheRun runs the `cache` binary with env added to a minimal one.
func cacheRun(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(cacheBinary(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestServeDeploymentRuns starts cache-serve with config/serve's container
// args and tokens file as written (paths mapped to a temp dir): it starts,
// the probes' /healthz answers, and a request without a token is refused
// (the tokens file is in force, nothing is open). The args point at a fake
// API server too, and the ServiceAccounts of examples/serve save and
// restore with their tokens, each in its scope.
func TestServeDeploymentRuns(t *testing.T) {
	objs := kustomizeBuild(t, filepath.Join(repoRoot(t), "config", "serve"))
	dir := t.TempDir()
	args := deploymentArgs(t, objs, dir)
	kubeconfig, audiences := fakeTokenReview(t, map[string]string{
		"main.sa-token.sig": "system:serviceaccount:ci:main-pipelines",
		"pr.sa-token.sig":   "system:serviceaccount:ci:pr-pipelines",
	})
	args = append(args, "--kubeconfig="+kubeconfig)
	base, p := startServe(t, args, nil)

	req, err := http.NewRequest(http.MethodPut, base+"/v1/refs/go-x", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("PUT a ref without a token: %s, want 401 Unauthorized", resp.Status)
	}

	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte(strings.Repeat("main's build ", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cacheRun(t, []string{"CACHE_TOKEN=main.sa-token.sig"}, "upload", "--store", base, "--key", "go-1", "--folder", src, "--strict"); err != nil {
		t.Fatalf("main-pipelines' save: %v\n%s", err, out)
	}
	// The pull request's ServiceAccount restores main's entry; what it saves
	// lands in its own scope, which main never reads.
	dst := t.TempDir()
	if out, err := cacheRun(t, []string{"CACHE_TOKEN=pr.sa-token.sig"}, "fetch", "--store", base, "--key", "go-1", "--folder", dst, "--strict"); err != nil {
		t.Fatalf("pr-pipelines' restore of main's entry: %v\n%s", err, out)
	}
	if data, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || !strings.HasPrefix(string(data), "main's build") {
		t.Fatalf("pr-pipelines restored %q, %v", data, err)
	}
	if out, err := cacheRun(t, []string{"CACHE_TOKEN=pr.sa-token.sig"}, "upload", "--store", base, "--key", "go-2", "--folder", src, "--strict"); err != nil {
		t.Fatalf("pr-pipelines' save: %v\n%s", err, out)
	}
	if out, err := cacheRun(t, []string{"CACHE_TOKEN=main.sa-token.sig"}, "fetch", "--store", base, "--key", "go-2", "--folder", t.TempDir(), "--strict"); err == nil {
		t.Errorf("main-pipelines restored the pull request's entry:\n%s", out)
	}
	if out, err := cacheRun(t, []string{"CACHE_TOKEN=nobody.sa-token.sig"}, "fetch", "--store", base, "--key", "go-1", "--folder", t.TempDir(), "--strict"); err == nil {
		t.Errorf("a token TokenReview refuses restored an entry:\n%s", out)
	}
	for _, a := range audiences() {
		if a != "tekton-cache" {
			t.Errorf("cache-serve asked TokenReview for the audience %q, want tekton-cache", a)
		}
	}
	if len(audiences()) == 0 {
		t.Error("cache-serve never called TokenReview")
	}
	if strings.Contains(p.Output(), "sa-token") {
		t.Errorf("the server's log holds a token:\n%s", p.Output())
	}
}

// TestServeS3OverlayRuns starts cache-serve with the s3 overlay's args and
// env against MinIO: the bucket URL pointed at it, the credentials in the
// variables the overlay fills from its Secret. A save and a restore go
// through it.
func TestServeS3OverlayRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MinIO")
	}
	objs := kustomizeBuild(t, filepath.Join(repoRoot(t), "config", "serve", "overlays", "s3"))
	m := startMinIO(t)
	dir := t.TempDir()
	token := "static-token-for-the-s3-test"
	sum := sha256.Sum256([]byte(token))
	args := deploymentArgs(t, objs, dir)
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--store=s3://BUCKET/PREFIX?"):
			u, err := url.Parse(strings.TrimPrefix(a, "--store="))
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			q.Set("region", "us-east-1")
			q.Set("endpoint", m.Endpoint)
			q.Set("use_path_style", "true")
			args[i] = "--store=s3://tekton-caches" + u.Path + "?" + q.Encode()
		case strings.HasPrefix(a, "--store="):
			t.Fatalf("the overlay's %s is not s3://BUCKET/PREFIX?...", a)
		case strings.HasPrefix(a, "--tokens-file="):
			// A static token in place of TokenReview.
			f := fmt.Sprintf("tokens:\n  - name: test\n    sha256: %s\n    write: main\n", hex.EncodeToString(sum[:]))
			if err := os.WriteFile(filepath.Join(dir, "static.yaml"), []byte(f), 0o600); err != nil {
				t.Fatal(err)
			}
			args[i] = "--tokens-file=" + filepath.Join(dir, "static.yaml")
		case a == "--token-review":
			args[i] = "--token-review=false" // the static token instead
		}
	}
	s, _ := collect(objs)
	creds := map[string]string{"AWS_ACCESS_KEY_ID": m.User, "AWS_SECRET_ACCESS_KEY": m.Secret}
	var env []string
	for _, e := range s.Deployment.Spec.Template.Spec.Containers[0].Env {
		v, ok := creds[e.Name]
		if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Fatalf("env %s: not a credential from a Secret", e.Name)
		}
		env = append(env, e.Name+"="+v)
	}
	base, _ := startServe(t, args, env)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte(strings.Repeat("x", 10000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cacheRun(t, []string{"CACHE_TOKEN=" + token}, "upload", "--store", base, "--key", "go-1", "--folder", src, "--strict"); err != nil {
		t.Fatalf("save through the s3 overlay's server: %v\n%s", err, out)
	}
	dst := t.TempDir()
	if out, err := cacheRun(t, []string{"CACHE_TOKEN=" + token}, "fetch", "--store", base, "--key", "go-1", "--folder", dst, "--strict"); err != nil {
		t.Fatalf("restore through the s3 overlay's server: %v\n%s", err, out)
	}
	if data, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || len(data) != 10000 {
		t.Fatalf("restored %d bytes, %v", len(data), err)
	}
}

// startMainServe starts cache-serve over dir/data with a tokens file
// in which token writes the scope main, as main's pipelines do.
func startMainServe(t *testing.T, dir, token string) (string, *testserver.Process) {
	t.Helper()
	sum := sha256.Sum256([]byte(token))
	tokens := fmt.Sprintf("tokens:\n  - name: main-pipelines\n    sha256: %s\n    write: main\n", hex.EncodeToString(sum[:]))
	if err := os.WriteFile(filepath.Join(dir, "tokens.yaml"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServe(t, []string{"--store=file://" + filepath.Join(dir, "data"), "--tokens-file=" + filepath.Join(dir, "tokens.yaml")}, nil)
}

// TestServePipeline runs examples/serve's Pipeline through the harness
// against a real cache-serve on 127.0.0.1: the cache-token workspace holds
// the token (a static one here, standing in for the projected
// ServiceAccount token) that TOKEN_FILE passes to the StepActions. The
// first run misses and saves; the second restores and saves nothing.
func TestServePipeline(t *testing.T) {
	dir := t.TempDir()
	token := "example-serve-pipeline-token"
	base, p := startMainServe(t, dir, token)

	tokenDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(tokenDir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	pipeline := loadPipeline(t, "examples/serve/pipeline-go-serve.yaml")
	upstream := freshSource(t, "go-project")
	run := func(name string) *TaskRunResult {
		t.Helper()
		return runPipelineTask(t, h, pipeline, "build-task", name, v1.Params{
			stringParam("repo_url", upstream),
			stringParam("cache-server", base),
			stringParam("buildCommand", "sh "+absTestdata(t, "fake-go-build.sh")),
		}, map[string]string{"cache-token": tokenDir})
	}
	first := run("first")
	if r := first.Step("cache-fetch").Results; r["fetched"] != "false" || r["status"] == "error" {
		t.Errorf("first run's fetch: %v; want a miss", r)
	}
	if r := first.Step("cache-upload").Results; r["uploaded"] != "true" {
		t.Errorf("first run did not save: %v", r)
	}
	second := run("second")
	if second.Step("cache-fetch").Results["fetched"] != "true" || second.Step("cache-upload").Results["uploaded"] != "false" {
		t.Errorf("second run: fetch %v, upload %v; want a hit and no upload", second.Step("cache-fetch").Results, second.Step("cache-upload").Results)
	}
	if second.Results["cache-fetched"] != "true" {
		t.Errorf("the Pipeline's cache-fetched = %q, want true", second.Results["cache-fetched"])
	}
	// The entry is in the token's scope, "main", on the server's directory.
	out, err := cacheRun(t, nil, "list", "--store", "file://"+filepath.Join(dir, "data"))
	if err != nil || !regexp.MustCompile(`(?m)^main\.go-[0-9a-f]{16,}\s`).MatchString(out) {
		t.Errorf("the server's store holds no main.go-<hash> entry (%v):\n%s", err, out)
	}
	if strings.Contains(p.Output(), token) {
		t.Errorf("the server's log holds the token:\n%s", p.Output())
	}
}
