package tekton

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
)

// fakeBuildctl stands in for the BuildKit image's buildctl-daemonless.sh:
// it records its arguments and the token it was given in the environment.
const fakeBuildctl = `#!/bin/sh
printf '%s\n' "$@" > "$RECORD.args"
printf '%s' "$ACTIONS_RUNTIME_TOKEN" > "$RECORD.token"
echo "fake buildctl-daemonless.sh: $# arguments"
`

// TestBuildKitGHATask runs examples/buildkit-gha's Task through the
// harness against a real cache-serve on 127.0.0.1, BuildKit faked: the
// gha-token step trades the cache-token workspace's credential for a
// runtime token the server accepts, in the runtime-token workspace; the
// build step hands it to buildctl in ACTIONS_RUNTIME_TOKEN (never on the
// command line) with --import-cache and --export-cache type=gha at the
// server's URL; no result and no output holds it.
func TestBuildKitGHATask(t *testing.T) {
	dir := t.TempDir()
	credential := "example-buildkit-gha-token"
	base, p := startMainServe(t, dir, credential)

	credDir, runtimeDir, binDir := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(credDir, "token"), []byte(credential+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(binDir, "buildctl-daemonless.sh"), []byte(fakeBuildctl), 0o755); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(dir, "buildctl")
	h := newHarness(t)
	h.Env = append(h.Env, "RECORD="+record)
	for i, e := range h.Env {
		if strings.HasPrefix(e, "PATH=") {
			h.Env[i] = "PATH=" + binDir + string(os.PathListSeparator) + strings.TrimPrefix(e, "PATH=")
		}
	}
	task := loadTask(t, "examples/buildkit-gha/task-buildkit-gha.yaml")
	res, err := h.Run(context.Background(), filepath.Join(dir, "run"), TaskRunInput{
		Spec: &task.Spec,
		Params: v1.Params{
			stringParam("image", "registry.example/app:latest"),
			stringParam("cache-server", base),
		},
		Workspaces: map[string]string{"source": freshSource(t, "go-project"), "cache-token": credDir, "runtime-token": runtimeDir},
	})
	if err != nil {
		t.Fatal(err)
	}

	tokenFile := filepath.Join(runtimeDir, "token")
	data, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(data))
	if strings.Count(token, ".") != 2 {
		t.Fatalf("the runtime-token workspace holds %q, not a JWT", token)
	}
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("the runtime token file is %v (%v), want it readable by its owner only", fi.Mode(), err)
	}
	given, err := os.ReadFile(record + ".token")
	if err != nil || string(given) != token {
		t.Fatalf("buildctl got ACTIONS_RUNTIME_TOKEN %q (%v), want the runtime token", given, err)
	}
	// The server takes it: a v1 lookup of a key nobody saved is a miss
	// (204), not a refusal.
	req, _ := http.NewRequest(http.MethodGet, base+"/_apis/artifactcache/cache?keys=nothing&version=1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("a v1 lookup with the runtime token: %d, want 204 (a miss)", resp.StatusCode)
	}

	args, err := os.ReadFile(record + ".args")
	if err != nil {
		t.Fatal(err)
	}
	cache := "type=gha,version=1,url=" + base + "/,scope=buildkit"
	for _, want := range []string{"build", "--import-cache\n" + cache + "\n", "--export-cache\n" + cache + ",mode=max,ignore-error=true\n", "type=image,name=registry.example/app:latest,push=true"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("buildctl's arguments lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(string(args), token) {
		t.Errorf("the token is on buildctl's command line")
	}
	for _, s := range res.Steps {
		if strings.Contains(s.Output, token) || strings.Contains(s.Output, credential) {
			t.Errorf("step %s printed a token:\n%s", s.Name, s.Output)
		}
		for k, v := range s.Results {
			if strings.Contains(v, token) {
				t.Errorf("step %s's result %s holds the runtime token", s.Name, k)
			}
		}
	}
	if strings.Contains(p.Output(), token) || strings.Contains(p.Output(), credential) {
		t.Errorf("the server's log holds a token")
	}
}
