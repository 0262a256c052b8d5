package tekton

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

func loadTask(t testing.TB, path string) *v1.Task { return loadObject[*v1.Task](t, path) }

func decodeTask(t testing.TB, yaml string) *v1.Task {
	t.Helper()
	objs, err := Decode("inline", strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return objs[0].Obj.(*v1.Task)
}

// freshSource returns a new workspace directory holding a copy of a fixture.
func freshSource(t testing.TB, fixture string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "source")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyDir(t, filepath.Join("testdata", fixture), dir)
	return dir
}

func absTestdata(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCacheFriendlyTask runs examples/task-cache-friendly's Task with its
// optional cache workspace bound (twice: a miss that saves, then a hit) and
// unbound (the cache steps are skipped, the Task still succeeds).
func TestCacheFriendlyTask(t *testing.T) {
	h := newHarness(t)
	task := loadTask(t, "examples/task-cache-friendly/task-go-test-cached.yaml")
	store := t.TempDir()
	params := v1.Params{stringParam("testCommand", "sh "+absTestdata(t, "fake-go-build.sh"))}
	run := func(name string, bound bool) *TaskRunResult {
		t.Helper()
		ws := map[string]string{"source": freshSource(t, "go-project")}
		if bound {
			ws["cache"] = store
		}
		res, err := h.Run(context.Background(), filepath.Join(t.TempDir(), name), TaskRunInput{Spec: &task.Spec, Params: params, Workspaces: ws})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	first := run("first", true)
	if got := first.Step("cache-fetch").Results["fetched"]; got != "false" {
		t.Errorf("first fetch: fetched=%q, want false", got)
	}
	if got := first.Step("cache-upload").Results["uploaded"]; got != "true" {
		t.Errorf("first upload: uploaded=%q, want true", got)
	}
	second := run("second", true)
	if got := second.Step("cache-fetch").Results["fetched"]; got != "true" {
		t.Errorf("second fetch: fetched=%q, want true", got)
	}
	if !strings.Contains(second.Step("test").Output, "0 cache entries built") {
		t.Errorf("second run did not use the restored cache:\n%s", second.Step("test").Output)
	}
	cold := run("unbound", false)
	if !cold.Step("cache-fetch").Skipped || !cold.Step("cache-upload").Skipped {
		t.Error("with no cache workspace bound, the cache steps ran")
	}
	if !strings.Contains(cold.Step("test").Output, "48 cache entries built") {
		t.Errorf("unbound run did not run the tests cold:\n%s", cold.Step("test").Output)
	}
}

// TestPVCPipeline runs examples/pvc's Pipeline twice with its file:// store
// on a shared directory (the PVC): a miss that saves, then a hit.
func TestPVCPipeline(t *testing.T) {
	h := newHarness(t)
	pipeline := loadPipeline(t, "examples/pvc/pipeline-go-pvc.yaml")
	upstream := freshSource(t, "go-project")
	pvc := t.TempDir()
	run := func(name string) *TaskRunResult {
		t.Helper()
		return runPipelineTask(t, h, pipeline, "build-task", name, v1.Params{
			stringParam("repo_url", upstream),
			stringParam("buildCommand", "sh "+absTestdata(t, "fake-go-build.sh")),
		}, map[string]string{"cache-store": pvc})
	}
	first := run("first")
	if first.Step("cache-upload").Results["uploaded"] != "true" {
		t.Errorf("first run did not save: %v", first.Step("cache-upload").Results)
	}
	second := run("second")
	if second.Step("cache-fetch").Results["fetched"] != "true" || second.Step("cache-upload").Results["uploaded"] != "false" {
		t.Errorf("second run: fetch %v, upload %v; want a hit and no upload", second.Step("cache-fetch").Results, second.Step("cache-upload").Results)
	}
}

// TestPlainStep runs examples/plain-step's Task, which calls the image's
// binary as a command with CACHE_* env and no StepAction, twice.
func TestPlainStep(t *testing.T) {
	h := newHarness(t)
	task := loadTask(t, "examples/plain-step/task-npm-plain.yaml")
	store := "file://" + t.TempDir()
	run := func(name string) *TaskRunResult {
		t.Helper()
		res, err := h.Run(context.Background(), filepath.Join(t.TempDir(), name), TaskRunInput{
			Spec: &task.Spec,
			Params: v1.Params{
				stringParam("store", store),
				stringParam("buildCommand", "sh "+absTestdata(t, "fake-npm-build.sh")),
			},
			Workspaces: map[string]string{"source": freshSource(t, "npm-project")},
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	first := run("first")
	if !strings.Contains(first.Step("build").Output, "downloaded") || !strings.Contains(first.Step("save").Output, "saved npm-") {
		t.Errorf("first run: build %q, save %q", first.Step("build").Output, first.Step("save").Output)
	}
	second := run("second")
	if !strings.Contains(second.Step("restore").Output, "cache hit") || !strings.Contains(second.Step("build").Output, "cache hit") {
		t.Errorf("second run: restore %q, build %q", second.Step("restore").Output, second.Step("build").Output)
	}
	if !strings.Contains(second.Step("save").Output, "upload skipped") {
		t.Errorf("second run uploaded again: %q", second.Step("save").Output)
	}
}

// strictTask fetches and uploads with a given STORE and STRICT.
const strictTask = `apiVersion: tekton.dev/v1
kind: Task
metadata: {name: strict}
spec:
  params:
    - {name: store, type: string}
    - {name: strict, type: string}
  workspaces:
    - name: source
  steps:
    - name: cache-fetch
      ref: {name: cache-fetch}
      params:
        - {name: SOURCE, value: "$(params.store)"}
        - {name: CACHE_PATH, value: $(workspaces.source.path)/cache}
        - {name: WORKING_DIR, value: $(workspaces.source.path)}
        - {name: STRICT, value: $(params.strict)}
    - name: cache-upload
      ref: {name: cache-upload}
      params:
        - {name: TARGET, value: "$(params.store)"}
        - {name: KEY, value: $(steps.cache-fetch.results.key)}
        - {name: CACHE_PATH, value: $(workspaces.source.path)/cache}
        - {name: WORKING_DIR, value: $(workspaces.source.path)}
        - {name: STRICT, value: $(params.strict)}
`

// TestStoreDownNeverFailsUnlessStrict points the StepActions at a registry
// that is not there: the Task succeeds with fetched=false and uploaded=false;
// with STRICT=true the fetch step fails the Task.
func TestStoreDownNeverFailsUnlessStrict(t *testing.T) {
	h := newHarness(t)
	task := decodeTask(t, strictTask)
	store := fmt.Sprintf("oci://127.0.0.1:%d/nothing/here:go-{{hash}}", testserver.FreePort(t))
	run := func(strict string) (*TaskRunResult, error) {
		return h.Run(context.Background(), filepath.Join(t.TempDir(), "strict-"+strict), TaskRunInput{
			Spec:       &task.Spec,
			Params:     v1.Params{stringParam("store", store), stringParam("strict", strict)},
			Workspaces: map[string]string{"source": freshSource(t, "go-project")},
		})
	}
	res, err := run("false")
	if err != nil {
		t.Fatalf("the store being down failed the Task: %v", err)
	}
	if got := res.Step("cache-fetch").Results; got["fetched"] != "false" || got["restored"] != "false" || !strings.HasPrefix(got["key"], "go-") {
		t.Errorf("fetch results %v: want fetched=false restored=false and the key", got)
	}
	if got := res.Step("cache-upload").Results["uploaded"]; got != "false" {
		t.Errorf("upload result uploaded=%q, want false", got)
	}
	if !strings.Contains(res.Step("cache-fetch").Output, "warning") {
		t.Errorf("fetch did not warn:\n%s", res.Step("cache-fetch").Output)
	}
	res, err = run("true")
	if err == nil {
		t.Fatal("STRICT=true and the store down: the Task succeeded")
	}
	if res.Step("cache-fetch").ExitCode == 0 || res.Step("cache-upload") != nil {
		t.Errorf("STRICT=true: want the fetch step to fail and stop the Task (%v)", err)
	}
}

// authTask saves with registry credentials from DOCKER_CONFIG.
const authTask = `apiVersion: tekton.dev/v1
kind: Task
metadata: {name: auth}
spec:
  params:
    - {name: store, type: string}
    - {name: dockerConfig, type: string}
  workspaces:
    - name: source
  steps:
    - name: cache-upload
      ref: {name: cache-upload}
      params:
        - {name: TARGET, value: "$(params.store)"}
        - {name: CACHE_PATH, value: $(workspaces.source.path)/cache}
        - {name: WORKING_DIR, value: $(workspaces.source.path)}
        - {name: INSECURE, value: "true"}
        - {name: DOCKER_CONFIG, value: $(params.dockerConfig)}
`

// TestDockerConfig runs cache-upload against a registry that requires basic
// auth, with DOCKER_CONFIG pointing to a mounted kubernetes.io/dockerconfigjson
// Secret (a .dockerconfigjson file, as the reference tool supports), to a
// config.json, and to nothing.
func TestDockerConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry")
	}
	reg := testserver.Registry(t, "ciuser", "cipass")
	h := newHarness(t)
	task := decodeTask(t, authTask)
	auth := base64.StdEncoding.EncodeToString([]byte("ciuser:cipass"))
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{reg: map[string]string{"auth": auth}}})
	if err != nil {
		t.Fatal(err)
	}
	secret, configDir := t.TempDir(), t.TempDir()
	for path, data := range map[string][]byte{filepath.Join(secret, ".dockerconfigjson"): cfg, filepath.Join(configDir, "config.json"): cfg} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, dockerConfig, uploaded string
	}{
		{"dockerconfigjson", secret, "true"},
		{"config.json", configDir, "true"},
		{"none", "", "false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			source := freshSource(t, "go-project")
			if err := os.MkdirAll(filepath.Join(source, "cache"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(source, "cache", "entry"), []byte(tc.name), 0o644); err != nil {
				t.Fatal(err)
			}
			res, err := h.Run(context.Background(), t.TempDir(), TaskRunInput{
				Spec: &task.Spec,
				Params: v1.Params{
					stringParam("store", "oci://"+reg+"/auth/"+tc.name+":{{hash}}"),
					stringParam("dockerConfig", tc.dockerConfig),
				},
				Workspaces: map[string]string{"source": source},
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Step("cache-upload").Results["uploaded"]; got != tc.uploaded {
				t.Errorf("uploaded=%q, want %q:\n%s", got, tc.uploaded, res.Step("cache-upload").Output)
			}
		})
	}
}

// TestStepActionEnvMatchesFlags checks that every CACHE_* variable a
// StepAction sets names a flag of the command its script runs: a typo would
// otherwise be silently ignored.
func TestStepActionEnvMatchesFlags(t *testing.T) {
	bin := cacheBinary(t)
	commands := map[string]string{"cache-fetch": "fetch", "cache-upload": "upload"}
	scriptEnv := regexp.MustCompile(`\b(CACHE_[A-Z_]+)=`)
	for name, sa := range ourStepActions(t) {
		help, err := exec.Command(bin, commands[name], "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("cache %s --help: %v", commands[name], err)
		}
		vars := map[string]bool{}
		for _, e := range sa.Spec.Env {
			if strings.HasPrefix(e.Name, "CACHE_") {
				vars[e.Name] = true
			}
		}
		for _, m := range scriptEnv.FindAllStringSubmatch(sa.Spec.Script, -1) {
			vars[m[1]] = true
		}
		for v := range vars {
			flag := "--" + strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v, "CACHE_")), "_", "-") + " "
			if !strings.Contains(string(help), flag) {
				t.Errorf("%s sets %s, but `cache %s` has no %s flag", name, v, commands[name], strings.TrimSpace(flag))
			}
		}
		if len(vars) < 8 {
			t.Errorf("%s: only %d CACHE_* variables found", name, len(vars))
		}
	}
}
