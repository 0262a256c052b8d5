package tekton

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"

	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// registryTags lists every repository:tag of a registry.
func registryTags(t testing.TB, base string) []string {
	t.Helper()
	get := func(path string, v any) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s: %s", path, resp.Status, data)
		}
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	var catalog struct{ Repositories []string }
	get("/v2/_catalog", &catalog)
	var out []string
	for _, repo := range catalog.Repositories {
		var tags struct{ Tags []string }
		get("/v2/"+repo+"/tags/list", &tags)
		for _, tag := range tags.Tags {
			out = append(out, repo+":"+tag)
		}
	}
	slices.Sort(out)
	return out
}

// TestGoPipelinePullRequestReadOnly runs examples/go/pipeline-go.yaml as
// the main branch would (it saves), then as an untrusted pull request with
// read-only "true" and a changed go.sum: the PR run restores main's entry
// through the restore key, builds, and writes nothing to the registry (no
// PUT, POST, PATCH or DELETE reaches it; the tags are the same).
func TestGoPipelinePullRequestReadOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry and runs the Go pipeline twice")
	}
	reg := testserver.Registry(t, "", "")
	proxy := faultproxy.New(t, "http://"+reg)
	h := newHarness(t)
	pipeline := loadPipeline(t, "examples/go/pipeline-go.yaml")
	upstream := freshSource(t, "go-project")
	params := func(readOnly string) []v1.Param {
		return []v1.Param{stringParam("repo_url", upstream), stringParam("registry", proxy.Addr()+"/team"),
			stringParam("buildCommand", "sh "+absTestdata(t, "fake-go-build.sh")), stringParam("insecure", "true"),
			stringParam("read-only", readOnly)}
	}

	main := runGoBuild(t, h, pipeline, "main", params("false")...)
	if got := main.Step("cache-upload").Results["uploaded"]; got != "true" {
		t.Fatalf("main run did not save: %v", main.Step("cache-upload").Results)
	}
	mainKey := main.Step("cache-upload").Results["key"]
	tags := registryTags(t, "http://"+reg)
	if len(tags) == 0 {
		t.Fatal("no tag in the registry after the main run")
	}

	if err := os.WriteFile(filepath.Join(upstream, "go.sum"), []byte("example.com/dep v1.0.1 h1:PRPR=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy.Clear()
	pr := runGoBuild(t, h, pipeline, "pr", params("true")...)
	fetch, upload := pr.Step("cache-fetch").Results, pr.Step("cache-upload").Results
	if fetch["restored"] != "true" || fetch["matched-key"] != mainKey || fetch["fetched"] != "false" {
		t.Errorf("PR fetch: %v; want main's entry %s restored through the restore key", fetch, mainKey)
	}
	if upload["status"] != "skipped" || upload["uploaded"] != "false" {
		t.Errorf("PR upload: %v; want skipped", upload)
	}
	if proxy.Count("", "") == 0 {
		t.Fatal("the PR run sent no request through the proxy: the test does not watch the store")
	}
	for _, m := range []string{"PUT", "POST", "PATCH", "DELETE"} {
		if n := proxy.Count(m, ""); n != 0 {
			t.Errorf("the read-only PR run sent %d %s request(s) to the registry", n, m)
		}
	}
	if after := registryTags(t, "http://"+reg); !slices.Equal(after, tags) {
		t.Errorf("registry tags changed in the PR run: %v -> %v", tags, after)
	}
}

// TestGoPipelineScopes runs examples/go/pipeline-go.yaml as
// pipelinerun-go-pac.yaml does: main saves under scope main; a pull request
// (scope pr-7, fallback main) with a changed go.sum restores main's entry
// and saves under pr-7_; main with the pull request's go.sum then restores
// its own older entry, never the pull request's.
func TestGoPipelineScopes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry and runs the Go pipeline three times")
	}
	reg := testserver.Registry(t, "", "")
	h := newHarness(t)
	pipeline := loadPipeline(t, "examples/go/pipeline-go.yaml")
	upstream := freshSource(t, "go-project")
	run := func(name string, extra ...v1.Param) *TaskRunResult {
		params := append([]v1.Param{stringParam("repo_url", upstream), stringParam("registry", reg+"/team"),
			stringParam("buildCommand", "sh "+absTestdata(t, "fake-go-build.sh")), stringParam("insecure", "true")}, extra...)
		return runGoBuild(t, h, pipeline, name, params...)
	}
	main := run("main", stringParam("cache-scope", "main"))
	mainKey := main.Step("cache-upload").Results["key"]
	if main.Step("cache-upload").Results["uploaded"] != "true" || !strings.HasPrefix(mainKey, "main_go-") {
		t.Fatalf("main run: %v; want a save under main_go-", main.Step("cache-upload").Results)
	}
	if err := os.WriteFile(filepath.Join(upstream, "go.sum"), []byte("example.com/dep v1.0.1 h1:PRPR=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pr := run("pr", stringParam("cache-scope", "pr-7"), stringParam("cache-fallback-scope", "main"))
	if got := pr.Step("cache-fetch").Results["matched-key"]; got != mainKey {
		t.Errorf("the PR restored %q, want main's %s", got, mainKey)
	}
	prKey := pr.Step("cache-upload").Results["key"]
	if pr.Step("cache-upload").Results["uploaded"] != "true" || !strings.HasPrefix(prKey, "pr-7_go-") {
		t.Fatalf("PR run: %v; want a save under pr-7_go-", pr.Step("cache-upload").Results)
	}
	again := run("main-again", stringParam("cache-scope", "main"))
	if got := again.Step("cache-fetch").Results["matched-key"]; got != mainKey {
		t.Errorf("main restored %q after the PR saved %s: want main's own %s", got, prKey, mainKey)
	}
}
