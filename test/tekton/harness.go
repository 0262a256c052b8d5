package tekton

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/apis/pipeline/v1beta1"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned/fake"
	"github.com/tektoncd/pipeline/pkg/pod"
	prresources "github.com/tektoncd/pipeline/pkg/reconciler/pipelinerun/resources"
	"github.com/tektoncd/pipeline/pkg/reconciler/taskrun/resources"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImageBinary is where the `cache` binary sits in the image: ko's
// /ko-app/<name>, the path the reference tool's scripts call too.
const ImageBinary = "/ko-app/cache"

// Harness runs a Task's steps on this machine, as a pod would run them:
// StepAction refs resolved and params, results and workspaces substituted by
// Tekton's own reconciler functions, then each step's script run in turn
// with step results passed through files.
type Harness struct {
	// StepActions are what the (fake) cluster holds, in namespace "default".
	StepActions []*v1beta1.StepAction
	// Stub maps a step ref that needs a remote resolver (git-clone from the
	// catalog over http ...) to the name of a StepAction in StepActions that
	// stands in for it; "" leaves the ref alone (and resolution fails).
	Stub func(ref *v1.Ref) string
	// CacheBinary replaces ImageBinary in the steps: the locally built `cache`.
	CacheBinary string
	// Env is the base environment of every step (PATH, HOME ...); the step's
	// own env is added to it.
	Env []string
	// Log receives each step's output as it runs.
	Log io.Writer
}

// TaskRunInput is what a TaskRun would carry.
type TaskRunInput struct {
	Spec   *v1.TaskSpec
	Params v1.Params
	// Workspaces maps a declared workspace to the host directory it is
	// mounted from; a workspace missing here is not bound.
	Workspaces map[string]string
}

// StepRun is what one step did.
type StepRun struct {
	Name     string // container name: step-<name>
	ExitCode int
	Skipped  bool
	Output   string
	Results  map[string]string // declared step results, as written
	// ResultsDir holds every file the step wrote next to its results.
	ResultsDir string
}

// TaskRunResult is what the TaskRun did.
type TaskRunResult struct {
	Steps   []*StepRun
	Results map[string]string // Task results whose value is a step result
}

// Step returns the run of the step named name (without the step- prefix).
func (r *TaskRunResult) Step(name string) *StepRun {
	for _, s := range r.Steps {
		if s.Name == pod.GetContainerName(name) {
			return s
		}
	}
	return nil
}

// stepResultRef is Tekton's pattern for a step result reference
// (pkg/internal/resultref: stepResultUsagePattern), resolved at run time by
// the entrypoint from the earlier step's result file.
var stepResultRef = regexp.MustCompile(`\$\(steps\..*?\.results\..*?\)`)

// Resolve turns a TaskRun into the steps a pod would run: it validates the
// TaskRun, resolves StepAction refs (GetStepActionsData), and applies
// params, contexts, results, artifacts, exit code paths and workspaces in
// the reconciler's order (applyParamsContextsResultsAndWorkspaces), then
// merges the stepTemplate as the pod builder does.
func (h *Harness) Resolve(ctx context.Context, in TaskRunInput) (*v1.TaskSpec, error) {
	ctx = AdmissionContext(ctx)
	ts := in.Spec.DeepCopy()
	ts.SetDefaults(ctx)
	for i := range ts.Steps {
		ref := ts.Steps[i].Ref
		if ref == nil {
			continue
		}
		if name := OurStepActionRef(ref); name != "" {
			ts.Steps[i].Ref = &v1.Ref{Name: name}
		} else if ref.Resolver != "" && h.Stub != nil {
			if stub := h.Stub(ref); stub != "" {
				ts.Steps[i].Ref = &v1.Ref{Name: stub}
			}
		}
	}
	var bindings []v1.WorkspaceBinding
	vols := map[string]corev1.Volume{}
	for i, w := range ts.Workspaces {
		dir, ok := in.Workspaces[w.Name]
		if !ok {
			if !w.Optional {
				return nil, fmt.Errorf("workspace %q is not optional and not bound", w.Name)
			}
			continue
		}
		// The pod mounts the volume at the declaration's mountPath: here, the
		// host directory.
		ts.Workspaces[i].MountPath = dir
		bindings = append(bindings, v1.WorkspaceBinding{Name: w.Name, EmptyDir: &corev1.EmptyDirVolumeSource{}})
		vols[w.Name] = corev1.Volume{Name: "ws-" + w.Name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	}
	tr := &v1.TaskRun{
		ObjectMeta: metav1.ObjectMeta{Name: "harness-run", Namespace: "default", UID: "harness-uid"},
		Spec:       v1.TaskRunSpec{TaskSpec: ts, Params: in.Params, Workspaces: bindings},
	}
	if err := Validate(ctx, tr); err != nil {
		return nil, fmt.Errorf("validating the TaskRun: %w", err)
	}
	client := fake.NewSimpleClientset()
	for _, sa := range h.StepActions {
		sa = sa.DeepCopy()
		sa.Namespace = tr.Namespace
		if _, err := client.TektonV1beta1().StepActions(tr.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	steps, err := resources.GetStepActionsData(ctx, *ts, tr, client, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("resolving StepActions: %w", err)
	}
	ts.Steps = steps
	if err := resources.ValidateParamArrayIndex(ts, tr.Spec.Params); err != nil {
		return nil, err
	}
	ts = resources.ApplyParameters(ts, tr, ts.Params...)
	ts = resources.ApplyContexts(ts, "harness-task", tr)
	ts = resources.ApplyResults(ts)
	ts = resources.ApplyArtifacts(ts)
	ts = resources.ApplyStepExitCodePath(ts)
	ts = resources.ApplyWorkspaces(ctx, ts, ts.Workspaces, tr.Spec.Workspaces, vols)
	ts.Steps, err = v1.MergeStepsWithStepTemplate(ts.StepTemplate, ts.Steps)
	if err != nil {
		return nil, err
	}
	return ts, nil
}

// Run resolves the TaskRun and runs its steps under dir, which stands for
// the pod's /tekton (step results, scripts) and the image's working
// directory. A step that fails stops the run (unless onError: continue),
// as in a pod; the error says which and carries its output.
func (h *Harness) Run(ctx context.Context, dir string, in TaskRunInput) (*TaskRunResult, error) {
	ts, err := h.Resolve(ctx, in)
	if err != nil {
		return nil, err
	}
	tektonDir := filepath.Join(dir, "tekton")
	workDir := filepath.Join(dir, "image-workdir")
	for _, d := range []string{filepath.Join(tektonDir, "scripts"), workDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// Paths Tekton hands to the steps, mapped to this machine.
	local := localPaths{tekton: tektonDir, bin: h.CacheBinary}
	out := &TaskRunResult{Results: map[string]string{}}
	for i, step := range ts.Steps {
		sr := &StepRun{Name: pod.StepName(step.Name, i), Results: map[string]string{}}
		out.Steps = append(out.Steps, sr)
		sr.ResultsDir = filepath.Join(tektonDir, "steps", sr.Name, "results")
		if err := os.MkdirAll(sr.ResultsDir, 0o755); err != nil {
			return out, err
		}
		env := append([]string{}, h.Env...)
		for _, e := range step.Env {
			if e.ValueFrom != nil {
				return out, fmt.Errorf("%s: env %s: valueFrom is not supported by the harness", sr.Name, e.Name)
			}
			env = append(env, e.Name+"="+h.stepResults(tektonDir, local.Replace(e.Value)))
		}
		args := make([]string, len(step.Args))
		for j, a := range step.Args {
			args[j] = h.stepResults(tektonDir, local.Replace(a))
		}
		if len(step.When) > 0 && !step.When.AllowsExecution(nil) {
			sr.Skipped = true
			continue
		}
		var cmd *exec.Cmd
		switch {
		case step.Script != "":
			script := local.Replace(step.Script)
			if !strings.HasPrefix(script, "#!") {
				// What Tekton does to a script without a shebang.
				script = "#!/bin/sh\nset -e\n" + script
			}
			path := filepath.Join(tektonDir, "scripts", fmt.Sprintf("script-%d", i))
			if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
				return out, err
			}
			cmd = exec.CommandContext(ctx, path, args...)
		case len(step.Command) > 0:
			command := make([]string, len(step.Command))
			for j, c := range step.Command {
				command[j] = h.stepResults(tektonDir, local.Replace(c))
			}
			cmd = exec.CommandContext(ctx, command[0], append(command[1:], args...)...)
		default:
			return out, fmt.Errorf("%s: no script and no command: the image's entrypoint cannot run here", sr.Name)
		}
		cmd.Env = env
		cmd.Dir = workDir
		if step.WorkingDir != "" {
			cmd.Dir = local.Replace(step.WorkingDir)
			if err := os.MkdirAll(cmd.Dir, 0o755); err != nil {
				return out, err
			}
		}
		var buf bytes.Buffer
		w := io.Writer(&buf)
		if h.Log != nil {
			fmt.Fprintf(h.Log, "--- %s\n", sr.Name)
			w = io.MultiWriter(&buf, h.Log)
		}
		cmd.Stdout, cmd.Stderr = w, w
		err := cmd.Run()
		sr.Output = buf.String()
		for _, r := range step.Results {
			if data, rerr := os.ReadFile(filepath.Join(sr.ResultsDir, r.Name)); rerr == nil {
				sr.Results[r.Name] = string(data)
			}
		}
		if err != nil {
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				return out, fmt.Errorf("%s: %w", sr.Name, err)
			}
			sr.ExitCode = exit.ExitCode()
			if step.OnError != v1.Continue {
				return out, fmt.Errorf("%s failed with exit code %d; the TaskRun fails:\n%s", sr.Name, sr.ExitCode, sr.Output)
			}
		}
	}
	for _, r := range ts.Results {
		if r.Value != nil && r.Value.StringVal != "" {
			out.Results[r.Name] = h.stepResults(tektonDir, r.Value.StringVal)
		}
	}
	return out, nil
}

// podPath matches an absolute path the pod provides (/tekton/..., the
// image's binary) where a path starts: at the start of a string, after
// space, a quote, '=' or ':'.
var podPath = regexp.MustCompile(`(^|[\s"'=:])(/tekton/|` + regexp.QuoteMeta(ImageBinary) + `\b)`)

// localPaths maps the pod's paths to this machine's.
type localPaths struct{ tekton, bin string }

func (l localPaths) Replace(s string) string {
	return podPath.ReplaceAllStringFunc(s, func(m string) string {
		lead, path := "", m
		if r := m[0]; r != '/' {
			lead, path = m[:1], m[1:]
		}
		if path == ImageBinary {
			return lead + l.bin
		}
		return lead + l.tekton + "/"
	})
}

// stepResults replaces $(steps.<step>.results.<result>) with the content of
// the earlier step's result file, as the entrypoint does before it starts a
// step. A reference it cannot fill in is left as it is (the entrypoint logs
// the error and goes on).
func (h *Harness) stepResults(tektonDir, s string) string {
	return stepResultRef.ReplaceAllStringFunc(s, func(m string) string {
		expr := strings.TrimSuffix(strings.TrimPrefix(m, "$("), ")")
		parts := strings.SplitN(expr, ".", 4) // steps, <step>, results, <result>
		if len(parts) != 4 || parts[2] != "results" {
			return m
		}
		data, err := os.ReadFile(filepath.Join(tektonDir, "steps", pod.GetContainerName(parts[1]), "results", parts[3]))
		if err != nil {
			if h.Log != nil {
				fmt.Fprintf(h.Log, "harness: cannot fill in %s: %v\n", m, err)
			}
			return m
		}
		var v v1.ResultValue
		if err := v.UnmarshalJSON(data); err != nil || v.Type != v1.ParamTypeString {
			return m
		}
		return v.StringVal
	})
}

// PipelineTaskRun turns one task of a Pipeline (with an embedded taskSpec)
// into the TaskRun the PipelineRun reconciler would create: the run's params
// applied with Tekton's pipelinerun ApplyParameters, the pipeline task's
// params passed, its workspaces mapped to the run's host directories.
func PipelineTaskRun(ctx context.Context, p *v1.Pipeline, params v1.Params, task string, workspaces map[string]string) (TaskRunInput, error) {
	ctx = AdmissionContext(ctx)
	ps := p.Spec.DeepCopy()
	ps.SetDefaults(ctx)
	pr := &v1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Name: "harness-pipelinerun", Namespace: "default"},
		Spec:       v1.PipelineRunSpec{PipelineRef: &v1.PipelineRef{Name: p.Name}, Params: params},
	}
	ps, err := prresources.ApplyParameters(ps, pr)
	if err != nil {
		return TaskRunInput{}, err
	}
	for _, pt := range append(ps.Tasks, ps.Finally...) {
		if pt.Name != task {
			continue
		}
		if pt.TaskSpec == nil {
			return TaskRunInput{}, fmt.Errorf("pipeline task %q has no embedded taskSpec", task)
		}
		in := TaskRunInput{Spec: &pt.TaskSpec.TaskSpec, Params: pt.Params, Workspaces: map[string]string{}}
		for _, w := range pt.Workspaces {
			pw := w.Workspace
			if pw == "" {
				pw = w.Name // Tekton binds the pipeline workspace of the same name
			}
			if dir, ok := workspaces[pw]; ok {
				in.Workspaces[w.Name] = dir
			}
		}
		return in, nil
	}
	return TaskRunInput{}, fmt.Errorf("pipeline %s has no task %q", p.Name, task)
}
