package tekton

import (
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// TestLanguagePipelines runs the Node, Python, Maven and Go test+lint
// examples twice each against a real registry, with package managers
// replaced by fake-fill.sh: the first run misses and uploads, the second
// restores the exact key, finds its cache filled, and skips the upload.
func TestLanguagePipelines(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry")
	}
	reg := testserver.Registry(t, "", "")
	h := newHarness(t)
	fill := absTestdata(t, "fake-fill.sh")
	for _, tc := range []struct {
		pipeline, task, fixture string
		params                  v1.Params
		// steps whose output says "hit" on the second run
		buildSteps []string
	}{
		{
			pipeline: "examples/node/pipeline-nodejs.yaml", task: "build-task", fixture: "npm-project",
			params:     v1.Params{stringParam("buildCommand", `sh `+fill+` "$npm_config_cache"`)},
			buildSteps: []string{"build"},
		},
		{
			pipeline: "examples/python/pipeline-python.yaml", task: "build-task", fixture: "python-project",
			params:     v1.Params{stringParam("buildCommand", `sh `+fill+` "$PIP_CACHE_DIR"`)},
			buildSteps: []string{"build"},
		},
		{
			pipeline: "examples/maven/pipeline-maven.yaml", task: "build-task", fixture: "maven-project",
			params:     v1.Params{stringParam("buildCommand", `sh `+fill+` "${MAVEN_OPTS#-Dmaven.repo.local=}"`)},
			buildSteps: []string{"build"},
		},
		{
			// The lint step needs what the test step put in GOCACHE: one
			// cache shared by both steps.
			pipeline: "examples/go/pipeline-go-lint.yaml", task: "test-and-lint", fixture: "go-project",
			params: v1.Params{
				stringParam("testCommand", `sh `+fill+` "$GOCACHE"`),
				stringParam("lintCommand", `sh `+fill+` "$GOLANGCI_LINT_CACHE" "$GOCACHE"`),
			},
			buildSteps: []string{"test", "lint"},
		},
	} {
		t.Run(filepath.Base(tc.pipeline), func(t *testing.T) {
			pipeline := loadPipeline(t, tc.pipeline)
			upstream := freshSource(t, tc.fixture)
			params := append(v1.Params{
				stringParam("repo_url", upstream),
				stringParam("registry", reg+"/"+strings.TrimSuffix(filepath.Base(tc.pipeline), ".yaml")),
			}, tc.params...)
			run := func(name string) *TaskRunResult {
				t.Helper()
				return runPipelineTask(t, h, pipeline, tc.task, name, params, nil)
			}
			first := run("first")
			if got := first.Step("cache-upload").Results["uploaded"]; got != "true" {
				t.Errorf("first run: uploaded=%q, want true", got)
			}
			second := run("second")
			if got := second.Step("cache-fetch").Results["fetched"]; got != "true" {
				t.Errorf("second run: fetched=%q, want true", got)
			}
			if got := second.Step("cache-upload").Results["uploaded"]; got != "false" {
				t.Errorf("second run: uploaded=%q, want false", got)
			}
			for _, s := range tc.buildSteps {
				if out := second.Step(s).Output; !strings.Contains(out, "fake-fill: hit") {
					t.Errorf("second run, step %s did not find its cache: %q", s, out)
				}
			}
		})
	}
}
