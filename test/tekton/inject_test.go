package tekton

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"

	"github.com/tekton-cache/tekton-cache/internal/inject"
)

// TestInjectGoldenValid decodes every golden output of the rewrite
// (internal/inject/testdata/*/golden.yaml) strictly with Tekton's scheme
// and validates it as the admission webhook would; each injected step must
// keep its own env over the stepTemplate's once Tekton merges them, and
// every step name must be unique in its task.
func TestInjectGoldenValid(t *testing.T) {
	goldens, err := filepath.Glob(filepath.Join(repoRoot(t), "internal", "inject", "testdata", "*", "golden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(goldens) < 8 {
		t.Fatalf("%d golden files, want the 8 or more cases of internal/inject", len(goldens))
	}
	for _, g := range goldens {
		t.Run(filepath.Base(filepath.Dir(g)), func(t *testing.T) {
			objs, err := LoadFile(g)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != 1 {
				t.Fatalf("%d documents, want 1", len(objs))
			}
			if err := Validate(context.Background(), objs[0].Obj); err != nil {
				t.Fatalf("Tekton rejects it: %v", err)
			}
			checkInjectedSteps(t, objs[0].Obj)
		})
	}
}

// checkInjectedSteps checks every task the rewrite annotated: its added
// steps exist, each name once, and after Tekton merges the stepTemplate
// into them their CACHE_* env is still theirs.
func checkInjectedSteps(t *testing.T, obj interface{}) {
	t.Helper()
	var ps *v1.PipelineSpec
	switch o := obj.(type) {
	case *v1.Pipeline:
		ps = &o.Spec
	case *v1.PipelineRun:
		ps = o.Spec.PipelineSpec
	}
	rewritten := 0
	for _, pt := range append(append([]v1.PipelineTask{}, ps.Tasks...), ps.Finally...) {
		if pt.TaskSpec == nil {
			continue
		}
		added := pt.TaskSpec.Metadata.Annotations[inject.AnnotationSteps]
		if added == "" {
			continue
		}
		rewritten++
		ts := pt.TaskSpec.TaskSpec
		names := map[string]int{}
		own := map[string]map[string]string{}
		for _, s := range ts.Steps {
			names[s.Name]++
			own[s.Name] = map[string]string{}
			for _, e := range s.Env {
				own[s.Name][e.Name] = e.Value
			}
		}
		for n, c := range names {
			if c > 1 {
				t.Errorf("task %s: step %s appears %d times", pt.Name, n, c)
			}
		}
		merged, err := v1.MergeStepsWithStepTemplate(ts.StepTemplate, ts.Steps)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range strings.Split(added, ",") {
			found := false
			for _, s := range merged {
				if s.Name != name {
					continue
				}
				found = true
				for _, e := range s.Env {
					if want, ok := own[name][e.Name]; ok && e.Value != want && strings.HasPrefix(e.Name, "CACHE_") {
						t.Errorf("task %s step %s: %s=%q after the stepTemplate, want its own %q", pt.Name, name, e.Name, e.Value, want)
					}
				}
			}
			if !found {
				t.Errorf("task %s: added step %s is missing", pt.Name, name)
			}
		}
	}
	if rewritten == 0 {
		t.Error("no task carries the rewrite's annotation")
	}
}

// TestInjectOptionalWorkspace resolves the finally golden's task, whose
// cached workspace is optional, as a TaskRun would: unbound, the injected
// steps' when skips them; bound, they run.
func TestInjectOptionalWorkspace(t *testing.T) {
	p := loadPipeline(t, "internal/inject/testdata/finally/golden.yaml")
	h := &Harness{}
	for _, bound := range []bool{false, true} {
		ws := map[string]string{"source": t.TempDir()}
		if bound {
			ws["npm-cache"] = t.TempDir()
		}
		in, err := PipelineTaskRun(context.Background(), p, nil, "report", ws)
		if err != nil {
			t.Fatal(err)
		}
		ts, err := h.Resolve(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ts.Steps {
			if !strings.HasPrefix(s.Name, "cache-") {
				continue
			}
			if runs := len(s.When) == 0 || s.When.AllowsExecution(nil); runs != bound {
				t.Errorf("npm-cache bound=%v: step %s runs=%v", bound, s.Name, runs)
			}
		}
	}
}
