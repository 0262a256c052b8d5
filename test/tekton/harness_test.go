package tekton

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/apis/pipeline/v1beta1"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

var (
	cacheBinOnce sync.Once
	cacheBin     string
	cacheBinErr  error
)

// cacheBinary builds the `cache` binary from the repository once per test
// process: it stands in for the image.
func cacheBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	cacheBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tekton-cache-bin-")
		if err != nil {
			cacheBinErr = err
			return
		}
		cacheBin = filepath.Join(dir, "cache")
		cmd := exec.Command("go", "build", "-o", cacheBin, "github.com/tekton-cache/tekton-cache/cmd/cache")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			cacheBinErr = fmt.Errorf("go build ./cmd/cache: %v\n%s", err, out)
		}
	})
	if cacheBinErr != nil {
		t.Fatal(cacheBinErr)
	}
	return cacheBin
}

// TestMain removes the binary cacheBinary built.
func TestMain(m *testing.M) {
	code := m.Run()
	if cacheBin != "" {
		os.RemoveAll(filepath.Dir(cacheBin))
	}
	os.Exit(code)
}

// harness returns a Harness holding our StepActions and the git-clone stub,
// with the `cache` binary built from this repository.
func newHarness(t testing.TB) *Harness {
	t.Helper()
	var sas []*v1beta1.StepAction
	for _, sa := range ourStepActions(t) {
		sas = append(sas, sa)
	}
	objs, err := LoadFile(filepath.Join("testdata", "git-clone-stub.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sas = append(sas, objs[0].Obj.(*v1beta1.StepAction))
	home := t.TempDir()
	return &Harness{
		StepActions: sas,
		Stub: func(ref *v1.Ref) string {
			for _, p := range ref.Params {
				if p.Name == "url" && strings.Contains(p.Value.StringVal, "/stepaction/git-clone/") {
					return "git-clone-stub"
				}
			}
			return ""
		},
		CacheBinary: cacheBinary(t),
		Env:         []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TMPDIR=" + t.TempDir()},
		Log:         testWriter{t},
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// loadObject returns the first object of type T in a file of the repository.
func loadObject[T any](t testing.TB, path string) T {
	t.Helper()
	objs, err := LoadFile(filepath.Join(repoRoot(t), path))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if obj, ok := o.Obj.(T); ok {
			return obj
		}
	}
	var zero T
	t.Fatalf("%s has no %T", path, zero)
	return zero
}

func loadPipeline(t testing.TB, path string) *v1.Pipeline { return loadObject[*v1.Pipeline](t, path) }

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-R", from+"/.", to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
}

func stringParam(name, value string) v1.Param {
	return v1.Param{Name: name, Value: *v1.NewStructuredValues(value)}
}

// TestGoPipeline runs examples/go/pipeline-go.yaml's build task three times
// against a real registry: the first run misses and uploads; the second
// hits and skips the upload; after a go.sum change the third restores from
// the restore key and uploads only the new content.
func TestGoPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry and runs the Go pipeline three times")
	}
	reg := testserver.Registry(t, "", "")
	h := newHarness(t)
	pipeline := loadPipeline(t, "examples/go/pipeline-go.yaml")
	upstream := t.TempDir()
	copyDir(t, filepath.Join("testdata", "go-project"), upstream)
	build, err := filepath.Abs(filepath.Join("testdata", "fake-go-build.sh"))
	if err != nil {
		t.Fatal(err)
	}

	run := func(name string) *TaskRunResult {
		t.Helper()
		return runGoBuild(t, h, pipeline, name, stringParam("repo_url", upstream),
			stringParam("registry", reg+"/tekton-cache-test"), stringParam("buildCommand", "sh "+build))
	}
	want := func(res *TaskRunResult, step, result, value string) {
		t.Helper()
		if got := res.Step(step).Results[result]; got != value {
			t.Errorf("%s result %s = %q, want %q", step, result, got, value)
		}
	}

	// 1. Cold: miss, build, upload.
	first := run("first")
	key := first.Step("cache-fetch").Results["key"]
	if !strings.HasPrefix(key, "go-") || len(key) < 20 {
		t.Fatalf("fetch key %q: want go-<hash>", key)
	}
	want(first, "cache-fetch", "fetched", "false")
	want(first, "cache-fetch", "restored", "false")
	want(first, "cache-fetch", "matched-key", "")
	want(first, "cache-upload", "uploaded", "true")
	want(first, "cache-upload", "key", key)
	if first.Results["cache-fetched"] != "false" {
		t.Errorf("task result cache-fetched = %q, want false", first.Results["cache-fetched"])
	}

	// 2. Warm: exact hit, upload skipped.
	second := run("second")
	want(second, "cache-fetch", "key", key)
	want(second, "cache-fetch", "fetched", "true")
	want(second, "cache-fetch", "restored", "true")
	want(second, "cache-fetch", "matched-key", key)
	want(second, "cache-upload", "uploaded", "false")
	if !strings.Contains(second.Step("build").Output, "0 cache entries built, 0 module downloaded") {
		t.Errorf("the second build did not find its cache restored:\n%s", second.Step("build").Output)
	}
	if second.Results["cache-fetched"] != "true" {
		t.Errorf("task result cache-fetched = %q, want true", second.Results["cache-fetched"])
	}

	// 3. go.sum changed: new key, restored from the restore key, only the
	// new download uploaded.
	if err := os.WriteFile(filepath.Join(upstream, "go.sum"), []byte("example.com/dep v1.0.1 h1:CCCC=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	third := run("third")
	newKey := third.Step("cache-fetch").Results["key"]
	if newKey == key || !strings.HasPrefix(newKey, "go-") {
		t.Fatalf("key after the go.sum change: %q (before: %q)", newKey, key)
	}
	want(third, "cache-fetch", "fetched", "false")
	want(third, "cache-fetch", "restored", "true")
	want(third, "cache-fetch", "matched-key", key)
	want(third, "cache-upload", "uploaded", "true")
	want(third, "cache-upload", "key", newKey)
	if !strings.Contains(third.Step("build").Output, "0 cache entries built, 1 module downloaded") {
		t.Errorf("the third build did not reuse the restored cache:\n%s", third.Step("build").Output)
	}
	upload := third.Step("cache-upload")
	total, sent := readInt(t, upload.ResultsDir, "bytes"), readInt(t, upload.ResultsDir, "uploaded-bytes")
	t.Logf("third upload: %d bytes in the entry, %d sent", total, sent)
	if total < 48*32768 || sent <= 0 || sent > total/4 {
		t.Errorf("third upload sent %d of %d bytes: want only the new content (64 KiB, compressed or not)", sent, total)
	}
}

// runGoBuild runs the build-task of a Go example pipeline with params, in a
// fresh emptyDir workspace.
func runGoBuild(t testing.TB, h *Harness, pipeline *v1.Pipeline, name string, params ...v1.Param) *TaskRunResult {
	t.Helper()
	return runPipelineTask(t, h, pipeline, "build-task", name, params, nil)
}

// runPipelineTask runs task of pipeline with params as a TaskRun named
// name, with a fresh emptyDir as its "source" workspace and the other
// workspaces bound to the directories given.
func runPipelineTask(t testing.TB, h *Harness, pipeline *v1.Pipeline, task, name string, params v1.Params, workspaces map[string]string) *TaskRunResult {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	source := filepath.Join(dir, "workspace", "source")
	if err := os.MkdirAll(source, 0o755); err != nil {
		t.Fatal(err)
	}
	bound := map[string]string{"source": source}
	for w, d := range workspaces {
		bound[w] = d
	}
	in, err := PipelineTaskRun(context.Background(), pipeline, params, task, bound)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.Run(context.Background(), dir, in)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func readInt(t testing.TB, dir, name string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}
