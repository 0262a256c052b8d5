package tekton

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/apis/pipeline/v1beta1"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned/fake"
	"github.com/tektoncd/pipeline/pkg/reconciler/taskrun/resources"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// repoRoot is the main module's directory, two levels up.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(data), "module github.com/tekton-cache/tekton-cache\n") {
		t.Fatalf("%s is not the tekton-cache repository root (go.mod: %v)", root, err)
	}
	return root
}

// shipped loads every YAML document under tekton/ and examples/, and the
// complete objects in the docs' yaml blocks.
func shipped(t testing.TB) []Object {
	t.Helper()
	root := repoRoot(t)
	files, err := YAMLFiles(filepath.Join(root, "tekton"), filepath.Join(root, "examples"))
	if err != nil {
		t.Fatal(err)
	}
	var objs []Object
	for _, f := range files {
		got, err := LoadFile(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if len(got) == 0 {
			t.Errorf("%s: no Tekton object in it", f)
		}
		objs = append(objs, got...)
	}
	for _, doc := range []string{"README.md", "docs/TEKTON.md", "docs/RESOLVER.md", "tekton/README-cache-fetch.md", "tekton/README-cache-upload.md"} {
		got, err := MarkdownObjects(filepath.Join(root, doc))
		if err != nil {
			t.Errorf("%v", err)
		}
		objs = append(objs, got...)
	}
	return objs
}

// ourStepActions loads tekton/cache-fetch.yaml and tekton/cache-upload.yaml.
func ourStepActions(t testing.TB) map[string]*v1beta1.StepAction {
	t.Helper()
	out := map[string]*v1beta1.StepAction{}
	for _, name := range []string{"cache-fetch", "cache-upload"} {
		objs, err := LoadFile(filepath.Join(repoRoot(t), "tekton", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != 1 {
			t.Fatalf("tekton/%s.yaml: %d documents, want one StepAction", name, len(objs))
		}
		sa, ok := objs[0].Obj.(*v1beta1.StepAction)
		if !ok || sa.Name != name {
			t.Fatalf("tekton/%s.yaml holds %T %q, want the StepAction %q", name, objs[0].Obj, sa.GetName(), name)
		}
		out[name] = sa
	}
	return out
}

// TestValidateShipped decodes every YAML we ship strictly with Tekton's
// scheme, defaults and validates it as the admission webhook would, and
// applies our own lint.
func TestValidateShipped(t *testing.T) {
	objs := shipped(t)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.Obj.GetObjectKind().GroupVersionKind().Kind]++
		if err := Validate(context.Background(), o.Obj); err != nil {
			t.Errorf("%s: invalid: %v", o, err)
		}
		msgs, err := LintScripts(o.Obj)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			t.Errorf("%s: %s", o, m)
		}
	}
	t.Logf("validated %d objects: %v", len(objs), kinds)
	for _, k := range []string{"StepAction", "Task", "Pipeline", "PipelineRun"} {
		if kinds[k] == 0 {
			t.Errorf("no %s among the shipped YAML", k)
		}
	}
}

// TestBadCopiesAreRejected proves the checks bite: a StepAction with a param
// spliced into its script fails Tekton's validation and our lint; a Task
// doing the same passes Tekton's validation but fails our lint.
func TestBadCopiesAreRejected(t *testing.T) {
	for _, tc := range []struct {
		file        string
		tektonError string // "" when Tekton accepts it
	}{
		{file: "bad-cache-fetch.yaml", tektonError: "param substitution in scripts is not allowed"},
		{file: "bad-task.yaml"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			objs, err := LoadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != 1 {
				t.Fatalf("%d documents, want 1", len(objs))
			}
			err = Validate(context.Background(), objs[0].Obj)
			switch {
			case tc.tektonError == "" && err != nil:
				t.Errorf("Tekton rejects it (%v); the test wants a case only our lint catches", err)
			case tc.tektonError != "" && (err == nil || !strings.Contains(err.Error(), tc.tektonError)):
				t.Errorf("Tekton validation: got %v, want an error containing %q", err, tc.tektonError)
			}
			msgs, err := LintScripts(objs[0].Obj)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) == 0 {
				t.Fatal("our lint accepted a param spliced into a script")
			}
			t.Logf("rejected: %s", strings.Join(msgs, "; "))
		})
	}
}

// TestStrictDecoding proves an unknown field is an error, not dropped.
func TestStrictDecoding(t *testing.T) {
	_, err := Decode("inline", strings.NewReader(`apiVersion: tekton.dev/v1beta1
kind: StepAction
metadata: {name: x}
spec:
  image: busybox
  scirpt: echo typo
`))
	if err == nil || !strings.Contains(err.Error(), "scirpt") {
		t.Fatalf("got %v, want an unknown field error naming scirpt", err)
	}
}

// referenceParams are the params of openshift-pipelines/tekton-caches'
// StepActions; ours must accept every one of them, with the same type, so
// that switching is a change of the ref.
var referenceParams = map[string]map[string]v1.ParamType{
	"cache-fetch": {
		"PATTERNS": v1.ParamTypeArray, "SOURCE": v1.ParamTypeString, "CACHE_PATH": v1.ParamTypeString,
		"WORKING_DIR": v1.ParamTypeString, "INSECURE": v1.ParamTypeString, "DOCKER_CONFIG": v1.ParamTypeString,
		"GOOGLE_APPLICATION_CREDENTIALS": v1.ParamTypeString, "AWS_CONFIG_FILE": v1.ParamTypeString,
		"AWS_SHARED_CREDENTIALS_FILE": v1.ParamTypeString, "BLOB_QUERY_PARAMS": v1.ParamTypeString,
	},
	"cache-upload": {
		"PATTERNS": v1.ParamTypeArray, "TARGET": v1.ParamTypeString, "CACHE_PATH": v1.ParamTypeString,
		"WORKING_DIR": v1.ParamTypeString, "INSECURE": v1.ParamTypeString, "FETCHED": v1.ParamTypeString,
		"FORCE_CACHE_UPLOAD": v1.ParamTypeString, "DOCKER_CONFIG": v1.ParamTypeString,
		"GOOGLE_APPLICATION_CREDENTIALS": v1.ParamTypeString, "AWS_CONFIG_FILE": v1.ParamTypeString,
		"AWS_SHARED_CREDENTIALS_FILE": v1.ParamTypeString, "BLOB_QUERY_PARAMS": v1.ParamTypeString,
	},
}

// ourExtraParams and ourResults are what the issue adds.
var (
	ourExtraParams = map[string][]string{
		"cache-fetch":  {"RESTORE_KEYS", "STRICT", "TIMEOUT", "JOBS", "LOOKUP_ONLY", "FAIL_ON_MISS", "CROSS_PLATFORM"},
		"cache-upload": {"KEY", "RESTORE_KEYS", "STRICT", "TIMEOUT", "JOBS", "CROSS_PLATFORM"},
	}
	ourResults = map[string][]string{
		"cache-fetch":  {"status", "error", "fetched", "restored", "key", "matched-key", "restore-key", "seconds", "bytes", "store", "age-seconds", "platform"},
		"cache-upload": {"status", "error", "uploaded", "key", "seconds", "bytes", "uploaded-bytes"},
	}
)

// TestStepActionsContract checks the StepActions' interface: a superset of
// the reference tool's params, our results, catalog metadata, every param
// used through env or args, and the image the release resolves.
func TestStepActionsContract(t *testing.T) {
	for name, sa := range ourStepActions(t) {
		t.Run(name, func(t *testing.T) {
			spec := sa.Spec.DeepCopy()
			spec.SetDefaults(context.Background())
			types := map[string]v1.ParamType{}
			for _, p := range spec.Params {
				types[p.Name] = p.Type
				if p.Description == "" {
					t.Errorf("param %s has no description", p.Name)
				}
			}
			for p, typ := range referenceParams[name] {
				if got, ok := types[p]; !ok {
					t.Errorf("missing the reference tool's param %s", p)
				} else if got != typ {
					t.Errorf("param %s is %s, the reference tool's is %s", p, got, typ)
				}
			}
			for _, p := range ourExtraParams[name] {
				if _, ok := types[p]; !ok {
					t.Errorf("missing param %s", p)
				}
			}
			results := map[string]bool{}
			for _, r := range spec.Results {
				results[r.Name] = true
			}
			for _, r := range ourResults[name] {
				if !results[r] {
					t.Errorf("missing result %s", r)
				}
			}
			// Every param reaches the program: through env, or args for arrays.
			var used strings.Builder
			for _, e := range spec.Env {
				used.WriteString(e.Value + "\n")
			}
			used.WriteString(strings.Join(spec.Args, "\n"))
			for p := range types {
				if !strings.Contains(used.String(), "$(params."+p+")") && !strings.Contains(used.String(), "$(params."+p+"[*])") {
					t.Errorf("param %s is not passed through env or args", p)
				}
			}
			if !strings.Contains(spec.Script, "/ko-app/cache ") {
				t.Errorf("the script does not run /ko-app/cache (the reference tool's path, where ko puts the binary)")
			}
			if spec.Image != "ko://github.com/tekton-cache/tekton-cache/cmd/cache" {
				t.Errorf("image %q: want the ko:// import path, resolved to a digest at release", spec.Image)
			}
			if sa.Labels["app.kubernetes.io/version"] == "" {
				t.Error("no app.kubernetes.io/version label")
			}
			for _, a := range []string{"tekton.dev/pipelines.minVersion", "tekton.dev/tags", "tekton.dev/displayName", "tekton.dev/platforms"} {
				if sa.Annotations[a] == "" {
					t.Errorf("no %s annotation", a)
				}
			}
			readme := filepath.Join(repoRoot(t), "tekton", "README-"+name+".md")
			data, err := os.ReadFile(readme)
			if err != nil {
				t.Fatalf("no README for the StepAction: %v", err)
			}
			for p := range types {
				if !strings.Contains(string(data), "`"+p+"`") {
					t.Errorf("%s does not list param %s", readme, p)
				}
			}
			for _, r := range spec.Results {
				if !strings.Contains(string(data), "`"+r.Name+"`") {
					t.Errorf("%s does not list result %s", readme, r.Name)
				}
			}
		})
	}
}

// TestStepActionRefsResolve resolves every reference to our StepActions in
// the examples with Tekton's own GetStepActionsData (against a fake
// clientset holding them): unknown params, missing required params and type
// mismatches fail here as they would fail the TaskRun.
func TestStepActionRefsResolve(t *testing.T) {
	sas := ourStepActions(t)
	client := fake.NewSimpleClientset()
	for _, sa := range sas {
		sa = sa.DeepCopy()
		sa.Namespace = "default"
		if _, err := client.TektonV1beta1().StepActions("default").Create(context.Background(), sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	refs := 0
	for _, o := range shipped(t) {
		for where, ts := range TaskSpecs(o.Obj) {
			ts = ts.DeepCopy()
			var steps []v1.Step
			for _, s := range ts.Steps {
				name := OurStepActionRef(s.Ref)
				if s.Ref != nil && name == "" {
					continue // another StepAction (git-clone ...): not ours to check
				}
				if name != "" {
					if _, ok := sas[name]; !ok {
						t.Errorf("%s %s: step %s refers to unknown StepAction %q", o, where, s.Name, name)
						continue
					}
					s.Ref = &v1.Ref{Name: name}
					refs++
				}
				steps = append(steps, s)
			}
			ts.Steps = steps
			ctx := AdmissionContext(context.Background())
			ts.SetDefaults(ctx)
			tr := &v1.TaskRun{ObjectMeta: metav1.ObjectMeta{Name: "check", Namespace: "default"}, Spec: v1.TaskRunSpec{TaskSpec: ts, Params: placeholderParams(ts.Params)}}
			if _, err := resources.GetStepActionsData(ctx, *ts, tr, client, nil, nil); err != nil {
				t.Errorf("%s %s: %v", o, where, err)
			}
		}
	}
	if refs < 2 {
		t.Fatalf("only %d references to our StepActions in examples/", refs)
	}
	t.Logf("resolved %d StepAction references", refs)
}

// OurStepActionRef returns the name of the StepAction a ref points to when
// it is one of ours by name (ref.name, or the cluster resolver's name param),
// else "".
func OurStepActionRef(ref *v1.Ref) string {
	if ref == nil {
		return ""
	}
	name := ref.Name
	if ref.Resolver == "cluster" {
		for _, p := range ref.Params {
			if p.Name == "name" {
				name = p.Value.StringVal
			}
		}
	} else if ref.Resolver != "" {
		return ""
	}
	if name == "cache-fetch" || name == "cache-upload" {
		return name
	}
	return ""
}

// TestKustomizeBuild renders tekton/ with kustomize (the first half of the
// release) and validates the output.
func TestKustomizeBuild(t *testing.T) {
	kustomize := testserver.Binary(t, "kustomize", "hack/install-tekton-tools.sh")
	out, err := exec.Command(kustomize, "build", filepath.Join(repoRoot(t), "tekton")).Output()
	if err != nil {
		t.Fatalf("kustomize build tekton: %v", err)
	}
	objs, err := Decode("kustomize build tekton", strings.NewReader(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("rendered %d objects, want the two StepActions", len(objs))
	}
	for _, o := range objs {
		if err := Validate(context.Background(), o.Obj); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
}

// placeholderParams gives every param without a default a value of its type,
// as the Pipeline or the TaskRun would.
func placeholderParams(specs v1.ParamSpecs) v1.Params {
	var out v1.Params
	for _, p := range specs {
		if p.Default != nil {
			continue
		}
		switch p.Type {
		case v1.ParamTypeArray:
			out = append(out, v1.Param{Name: p.Name, Value: v1.ParamValue{Type: v1.ParamTypeArray, ArrayVal: []string{"placeholder"}}})
		case v1.ParamTypeObject:
			obj := map[string]string{}
			for k := range p.Properties {
				obj[k] = "placeholder"
			}
			out = append(out, v1.Param{Name: p.Name, Value: *v1.NewObject(obj)})
		default:
			out = append(out, v1.Param{Name: p.Name, Value: *v1.NewStructuredValues("placeholder")})
		}
	}
	return out
}
