package tekton

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/apis/resolution/v1beta1"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned/fake"
	"github.com/tektoncd/pipeline/pkg/resolution/common"
	resolutionframework "github.com/tektoncd/pipeline/pkg/resolution/resolver/framework"

	"github.com/tekton-cache/tekton-cache/internal/inject"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
	"github.com/tekton-cache/tekton-cache/resolver"
)

const plainPipeline = "examples/resolver/pipeline-go-plain.yaml"

// runPlainTwice runs the rewritten pipeline-go-plain twice, each run on
// fresh volumes as a PipelineRun would have them (the source a new
// volumeClaimTemplate, go-cache and gomod-cache new emptyDirs): fetch-repo
// then build, through the harness. The first run must miss and upload, the
// second restore both workspaces exactly, skip both uploads and build from
// the restored caches.
func runPlainTwice(t *testing.T, h *Harness, p *v1.Pipeline, upstream string) {
	t.Helper()
	build, err := filepath.Abs(filepath.Join("testdata", "fake-go-build.sh"))
	if err != nil {
		t.Fatal(err)
	}
	params := v1.Params{stringParam("repo_url", upstream), stringParam("buildCommand", "sh "+build)}
	run := func(name string) *TaskRunResult {
		t.Helper()
		dir := filepath.Join(t.TempDir(), name)
		ws := map[string]string{}
		for _, w := range []string{"source", "go-cache", "gomod-cache"} {
			ws[w] = filepath.Join(dir, "workspace", w)
			if err := os.MkdirAll(ws[w], 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, task := range []string{"fetch-repo", "build"} {
			in, err := PipelineTaskRun(context.Background(), p, params, task, ws)
			if err != nil {
				t.Fatal(err)
			}
			res, err := h.Run(context.Background(), filepath.Join(dir, task), in)
			if err != nil {
				t.Fatalf("%s %s: %v", name, task, err)
			}
			if task == "build" {
				return res
			}
		}
		return nil
	}
	result := func(res *TaskRunResult, step, r string) string {
		t.Helper()
		s := res.Step(step)
		if s == nil {
			t.Fatalf("no step %s", step)
		}
		return s.Results[r]
	}
	first := run("first")
	second := run("second")
	for _, ws := range []string{"go-cache", "gomod-cache"} {
		fetch, upload := "cache-fetch-"+ws, "cache-upload-"+ws
		if got := result(first, fetch, "status"); got != "miss" {
			t.Errorf("first run, %s: status %q, want miss", fetch, got)
		}
		if got := result(first, upload, "uploaded"); got != "true" {
			t.Errorf("first run, %s: uploaded %q, want true", upload, got)
		}
		key := result(first, fetch, "key")
		if len(key) < 16 || result(first, upload, "key") != key {
			t.Errorf("first run: fetch key %q, upload key %q", key, result(first, upload, "key"))
		}
		if got := result(second, fetch, "fetched"); got != "true" {
			t.Errorf("second run, %s: fetched %q, want true", fetch, got)
		}
		if got := result(second, fetch, "matched-key"); got != key {
			t.Errorf("second run, %s: matched-key %q, want %q", fetch, got, key)
		}
		if got := result(second, upload, "uploaded"); got != "false" {
			t.Errorf("second run, %s: uploaded %q, want false (skipped on an exact hit)", upload, got)
		}
		if got := result(second, upload, "status"); got != "skipped" {
			t.Errorf("second run, %s: status %q, want skipped", upload, got)
		}
	}
	if out := first.Step("build").Output; !strings.Contains(out, "48 cache entries built, 1 module downloaded") {
		t.Errorf("the first build did not start cold:\n%s", out)
	}
	if out := second.Step("build").Output; !strings.Contains(out, "0 cache entries built, 0 module downloaded") {
		t.Errorf("the second build did not find its caches restored:\n%s", out)
	}
}

// plainUpstream is a fresh copy of the Go project the clone stub copies.
func plainUpstream(t *testing.T) string {
	t.Helper()
	upstream := t.TempDir()
	copyDir(t, filepath.Join("testdata", "go-project"), upstream)
	return upstream
}

// TestInjectRunTwice rewrites pipeline-go-plain as `cache inject` does
// (stepaction mode: the steps are refs to our StepActions, which the
// harness resolves) and runs its build task twice against a real registry.
func TestInjectRunTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry")
	}
	reg := testserver.Registry(t, "", "")
	data, err := os.ReadFile(filepath.Join(repoRoot(t), plainPipeline))
	if err != nil {
		t.Fatal(err)
	}
	out, rep, err := inject.RewriteYAML(data, inject.Options{
		Workspaces: []string{"go-cache", "gomod-cache"},
		Files:      []string{"**/go.sum"},
		Target:     "oci://" + reg + "/inject-test/{{workspace}}:go-{{hash}}",
		Mode:       inject.ModeStepAction,
		Insecure:   true,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Tasks, ",") != "build" {
		t.Fatalf("rewritten tasks %v, want build alone", rep.Tasks)
	}
	objs, err := Decode("inject output", strings.NewReader(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(context.Background(), objs[0].Obj); err != nil {
		t.Fatalf("Tekton rejects the rewrite: %v", err)
	}
	runPlainTwice(t, newHarness(t), objs[0].Obj.(*v1.Pipeline), plainUpstream(t))
}

// TestResolverGoPipeline runs examples/resolver: the Pipeline without cache
// steps is in the fake cluster's namespace, the PipelineRun's pipelineRef
// params (with the target moved to a real registry on 127.0.0.1) go to the
// resolver's Resolve, and the Pipeline it returns (inline mode: the image
// and script of our StepActions in the steps) runs twice in the harness:
// the second run hits.
func TestResolverGoPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry")
	}
	reg := testserver.Registry(t, "", "")
	plain := loadPipeline(t, plainPipeline)
	plain.Namespace = "ci"
	run := loadObject[*v1.PipelineRun](t, "examples/resolver/pipelinerun-go-resolver.yaml")
	ref := run.Spec.PipelineRef
	if ref == nil || ref.Resolver != "cache" {
		t.Fatalf("the example PipelineRun does not use the cache resolver: %+v", ref)
	}
	var params v1.Params
	for _, p := range ref.Params {
		if p.Name == resolver.ParamTarget {
			// kind-registry:5000/$(context.pipelineRun.namespace)/cache/...:
			// the same shape, on the test's registry.
			v := p.Value.StringVal
			if !strings.HasPrefix(v, "oci://kind-registry:5000/$(context.pipelineRun.namespace)/") {
				t.Fatalf("target %q: the example changed, update this test", v)
			}
			p = stringParam(p.Name, strings.Replace(v, "oci://kind-registry:5000/$(context.pipelineRun.namespace)/", "oci://"+reg+"/ci/", 1))
		}
		params = append(params, p)
	}
	r := &resolver.Resolver{Client: fake.NewSimpleClientset(plain), Version: "test"}
	ctx := common.InjectRequestNamespace(context.Background(), "ci")
	ctx = resolutionframework.InjectResolverConfigToContext(ctx, map[string]string{
		resolver.ConfigDefaultImage:   "registry.example.com/tekton-cache/cache:test",
		resolver.ConfigAllowedTargets: "oci://" + reg + "/",
	})
	req := &v1beta1.ResolutionRequestSpec{Params: params}
	if err := r.Validate(ctx, req); err != nil {
		t.Fatal(err)
	}
	res, err := r.Resolve(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode("resolved", strings.NewReader(string(res.Data())))
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(context.Background(), objs[0].Obj); err != nil {
		t.Fatalf("Tekton rejects the resolved Pipeline: %v", err)
	}
	p := objs[0].Obj.(*v1.Pipeline)
	for _, pt := range p.Spec.Tasks {
		if pt.Name == "build" && pt.TaskSpec.Steps[0].Ref != nil {
			t.Fatal("the resolver's default mode should inline the steps")
		}
	}
	runPlainTwice(t, newHarness(t), p, plainUpstream(t))
}
