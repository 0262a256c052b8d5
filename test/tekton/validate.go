package tekton

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/tektoncd/pipeline/pkg/apis/config"
	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"knative.dev/pkg/apis"
)

// PlaceholderName is given to objects that have only metadata.generateName,
// as the API server would before the admission webhook sees them.
const PlaceholderName = "placeholder"

// AdmissionContext is the context the admission webhook validates a create
// request with: Tekton's default config (feature flags, defaults) and
// apis.WithinCreate.
func AdmissionContext(ctx context.Context) context.Context {
	ctx = config.ToContext(ctx, config.FromContextOrDefaults(ctx))
	return apis.WithinCreate(ctx)
}

// Validate sets defaults on a copy of obj and validates it as the admission
// webhook would on create. A Kubernetes built-in kind (not tekton.dev) is
// left to the API server: only its strict decoding is checked.
func Validate(ctx context.Context, obj runtime.Object) error {
	if obj.GetObjectKind().GroupVersionKind().Group != "tekton.dev" {
		return nil
	}
	obj = obj.DeepCopyObject()
	if m, ok := obj.(interface {
		GetName() string
		GetGenerateName() string
		SetName(string)
	}); ok && m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(PlaceholderName)
	}
	ctx = AdmissionContext(ctx)
	d, ok := obj.(apis.Defaultable)
	if !ok {
		return fmt.Errorf("%T has no SetDefaults", obj)
	}
	d.SetDefaults(ctx)
	v, ok := obj.(apis.Validatable)
	if !ok {
		return fmt.Errorf("%T has no Validate", obj)
	}
	if ferr := v.Validate(ctx); ferr != nil {
		return ferr
	}
	return nil
}

// paramInScript finds a param substitution: $(params.x), $(params["x"]),
// $(params['x']), with any spacing Tekton accepts.
var paramInScript = regexp.MustCompile(`\$\(\s*params\s*[.\[]`)

// LintScripts returns a message for every `script:` field in obj, at any
// depth (StepAction, Task steps and sidecars, Pipeline tasks' embedded
// specs, runs' embedded specs), that splices a param. Params must reach a
// script through env or args.
func LintScripts(obj runtime.Object) ([]string, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var tree any
	if err := json.Unmarshal(data, &tree); err != nil {
		return nil, err
	}
	var out []string
	var walk func(path string, n any)
	walk = func(path string, n any) {
		switch n := n.(type) {
		case map[string]any:
			keys := make([]string, 0, len(n))
			for k := range n {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := path + "." + k
				if s, ok := n[k].(string); ok && k == "script" {
					for _, line := range strings.Split(s, "\n") {
						if paramInScript.MatchString(line) {
							out = append(out, fmt.Sprintf("%s: param spliced into a script (pass it through env or args): %s", p[1:], strings.TrimSpace(line)))
						}
					}
					continue
				}
				walk(p, n[k])
			}
		case []any:
			for i, e := range n {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	walk("", tree)
	return out, nil
}

// TaskSpecs returns every TaskSpec inside obj with a name for messages: a
// Task's spec, a Pipeline's (or a PipelineRun's embedded Pipeline's) tasks
// and finally tasks with an embedded taskSpec, a TaskRun's embedded spec.
func TaskSpecs(obj runtime.Object) map[string]*v1.TaskSpec {
	out := map[string]*v1.TaskSpec{}
	fromPipeline := func(prefix string, ps *v1.PipelineSpec) {
		if ps == nil {
			return
		}
		for _, group := range [][]v1.PipelineTask{ps.Tasks, ps.Finally} {
			for i := range group {
				if group[i].TaskSpec != nil {
					out[prefix+"tasks/"+group[i].Name] = &group[i].TaskSpec.TaskSpec
				}
			}
		}
	}
	switch o := obj.(type) {
	case *v1.Task:
		out["task/"+o.Name] = &o.Spec
	case *v1.TaskRun:
		if o.Spec.TaskSpec != nil {
			out["taskrun/"+o.Name] = o.Spec.TaskSpec
		}
	case *v1.Pipeline:
		fromPipeline("pipeline/"+o.Name+"/", &o.Spec)
	case *v1.PipelineRun:
		fromPipeline("pipelinerun/"+o.Name+o.GenerateName+"/", o.Spec.PipelineSpec)
	}
	return out
}
