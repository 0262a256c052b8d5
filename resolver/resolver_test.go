package resolver

import (
	"context"
	"encoding/base64"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tektoncd/pipeline/pkg/apis/config"
	resolverconfig "github.com/tektoncd/pipeline/pkg/apis/config/resolver"
	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/apis/resolution/v1beta1"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned/fake"
	tektonscheme "github.com/tektoncd/pipeline/pkg/client/clientset/versioned/scheme"
	ttesting "github.com/tektoncd/pipeline/pkg/reconciler/testing"
	frtesting "github.com/tektoncd/pipeline/pkg/remoteresolution/resolver/framework/testing"
	"github.com/tektoncd/pipeline/pkg/resolution/common"
	resolutionframework "github.com/tektoncd/pipeline/pkg/resolution/resolver/framework"
	"github.com/tektoncd/pipeline/test"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"knative.dev/pkg/system"
	_ "knative.dev/pkg/system/testing"
	"sigs.k8s.io/yaml"

	"github.com/tekton-cache/tekton-cache/internal/inject"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml")

const image = "registry.example.com/tekton-cache/cache:v0.1.0"

// fixture loads a Pipeline or Task of internal/inject's testdata into
// namespace ns.
func fixture[T any](t *testing.T, path, ns string) *T {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "internal", "inject", "testdata", path))
	if err != nil {
		t.Fatal(err)
	}
	obj := new(T)
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		t.Fatal(err)
	}
	any(obj).(metav1.Object).SetNamespace(ns)
	any(obj).(metav1.Object).SetUID("uid-1")
	return obj
}

func param(name, value string) v1.Param {
	return v1.Param{Name: name, Value: *v1.NewStructuredValues(value)}
}

func arrayParam(name string, values ...string) v1.Param {
	return v1.Param{Name: name, Value: *v1.NewStructuredValues(values[0], values[1:]...)}
}

// requestParams are the params of the example, on the taskref
// fixture (a taskRef to the Task go-build).
func requestParams() []v1.Param {
	return []v1.Param{
		param(ParamPipeline, "build-go"),
		arrayParam(ParamWorkspaces, "go-cache"),
		param(ParamFiles, "**/go.sum"),
		param(ParamTarget, "oci://registry.example.com/cache/{{workspace}}:{{hash}}"),
	}
}

// strict decodes a resolved resource as the PipelineRun reconciler would,
// refusing unknown fields, and validates it as the admission webhook does
// on the dry-run create.
func strict(t *testing.T, data []byte) *v1.Pipeline {
	t.Helper()
	obj, _, err := serializer.NewCodecFactory(tektonscheme.Scheme, serializer.EnableStrict).UniversalDeserializer().Decode(data, nil, nil)
	if err != nil {
		t.Fatalf("decoding the resolved Pipeline: %v\n%s", err, data)
	}
	p, ok := obj.(*v1.Pipeline)
	if !ok {
		t.Fatalf("resolved a %T", obj)
	}
	ctx := apis.WithinCreate(config.ToContext(context.Background(), config.FromContextOrDefaults(context.Background())))
	p.SetDefaults(ctx)
	if ferr := p.Validate(ctx); ferr != nil {
		t.Fatalf("Tekton rejects the resolved Pipeline: %v", ferr)
	}
	return p
}

func withConfig(ctx context.Context, conf map[string]string) context.Context {
	return resolutionframework.InjectResolverConfigToContext(ctx, conf)
}

// TestResolve calls Resolve with Tekton's fake clientset holding the
// Pipeline and its Task in the request's namespace (and a same-named
// Pipeline elsewhere, which must never be read).
func TestResolve(t *testing.T) {
	p := fixture[v1.Pipeline](t, "taskref/pipeline.yaml", "team-a")
	other := fixture[v1.Pipeline](t, "embedded/pipeline.yaml", "team-b")
	other.Name = "secret-pipeline"
	task := fixture[v1.Task](t, "taskref/tasks.yaml", "team-a")
	r := &Resolver{Client: fake.NewSimpleClientset(p, other, task), Version: "v0.0.1-test"}
	ctx := withConfig(common.InjectRequestNamespace(context.Background(), "team-a"), map[string]string{ConfigDefaultImage: image})

	res, err := r.Resolve(ctx, &v1beta1.ResolutionRequestSpec{Params: requestParams()})
	if err != nil {
		t.Fatal(err)
	}
	got := strict(t, res.Data())
	if got.Name != "build-go" || got.Labels["team"] != "platform" {
		t.Errorf("name %q labels %v: want the original's", got.Name, got.Labels)
	}
	ts := got.Spec.Tasks[0].TaskSpec
	if ts == nil || got.Spec.Tasks[0].TaskRef != nil {
		t.Fatal("the taskRef was not embedded")
	}
	var names []string
	for _, s := range ts.Steps {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "cache-fetch-cache,build,cache-upload-cache" {
		t.Errorf("steps %v", names)
	}
	if ts.Steps[0].Image != image {
		t.Errorf("fetch image %q, want the ConfigMap's default %q", ts.Steps[0].Image, image)
	}
	if ts.Metadata.Annotations[inject.AnnotationTask] != "go-build" || got.Annotations[inject.AnnotationBy] != "cache resolver v0.0.1-test" {
		t.Errorf("annotations: task %v, pipeline %v", ts.Metadata.Annotations, got.Annotations)
	}
	if res.Annotations()[inject.AnnotationTasks] != "build" || res.RefSource().URI != "/apis/tekton.dev/v1/namespaces/team-a/pipeline/build-go@uid-1" || len(res.RefSource().Digest["sha256"]) != 64 {
		t.Errorf("annotations %v, refSource %+v", res.Annotations(), res.RefSource())
	}

	// Another namespace's Pipeline is out of reach, whatever its name.
	ps := requestParams()
	ps[0] = param(ParamPipeline, "secret-pipeline")
	if _, err := r.Resolve(ctx, &v1beta1.ResolutionRequestSpec{Params: ps}); err == nil || !strings.Contains(err.Error(), "no Pipeline secret-pipeline in namespace team-a") {
		t.Errorf("reading another namespace's Pipeline: %v", err)
	}
}

// TestResolveRefuses checks the params and the ConfigMap's policy, before
// anything is read.
func TestResolveRefuses(t *testing.T) {
	r := &Resolver{Client: fake.NewSimpleClientset()}
	base := common.InjectRequestNamespace(context.Background(), "team-a")
	for _, c := range []struct {
		name   string
		conf   map[string]string
		params func([]v1.Param) []v1.Param
		want   string
	}{
		{"no image", nil, nil, "no image"},
		{"no pipeline", map[string]string{ConfigDefaultImage: image}, func(ps []v1.Param) []v1.Param { return ps[1:] }, "no pipelineref param"},
		{"unknown param", map[string]string{ConfigDefaultImage: image}, func(ps []v1.Param) []v1.Param { return append(ps, param("pipeline-name", "x")) }, `unknown param "pipeline-name"`},
		{"target not allowed", map[string]string{ConfigDefaultImage: image, ConfigAllowedTargets: "oci://registry.internal/cache/, s3://ci-cache/"}, nil, "is not under an allowed store"},
		{"image param refused", map[string]string{ConfigDefaultImage: image, ConfigAllowImage: "false"}, func(ps []v1.Param) []v1.Param { return append(ps, param(ParamImage, "evil/image")) }, "param image is not allowed"},
		{"bad insecure", map[string]string{ConfigDefaultImage: image}, func(ps []v1.Param) []v1.Param { return append(ps, param(ParamInsecure, "yes please")) }, "param insecure"},
		{"twice", map[string]string{ConfigDefaultImage: image}, func(ps []v1.Param) []v1.Param { return append(ps, param(ParamTarget, "oci://x/y")) }, "given twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ps := requestParams()
			if c.params != nil {
				ps = c.params(ps)
			}
			req := &v1beta1.ResolutionRequestSpec{Params: ps}
			ctx := withConfig(base, c.conf)
			if err := r.Validate(ctx, req); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Validate: %v, want %q", err, c.want)
			}
			if _, err := r.Resolve(ctx, req); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Resolve: %v, want %q", err, c.want)
			}
		})
	}
	// An allowed target passes the same check.
	ctx := withConfig(base, map[string]string{ConfigDefaultImage: image, ConfigAllowedTargets: "oci://registry.example.com/cache/"})
	if err := r.Validate(ctx, &v1beta1.ResolutionRequestSpec{Params: requestParams()}); err != nil {
		t.Errorf("allowed target refused: %v", err)
	}
}

// TestReconcile runs a ResolutionRequest through the framework's reconcile
// test harness (informers, the ConfigMap watcher, the reconciler writing
// the status): the status carries the rewritten Pipeline, its annotations
// and refSource.
func TestReconcile(t *testing.T) {
	ctx, _ := ttesting.SetupFakeContext(t)
	p := fixture[v1.Pipeline](t, "taskref/pipeline.yaml", "team-a")
	task := fixture[v1.Task](t, "taskref/tasks.yaml", "team-a")
	request := &v1beta1.ResolutionRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: "resolution.tekton.dev/v1beta1", Kind: "ResolutionRequest"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "rr", Namespace: "team-a", CreationTimestamp: metav1.Time{Time: time.Now()},
			Labels: map[string]string{common.LabelKeyResolverType: LabelValue},
		},
		Spec: v1beta1.ResolutionRequestSpec{Params: requestParams()},
	}
	d := test.Data{
		ConfigMaps: []*corev1.ConfigMap{{
			ObjectMeta: metav1.ObjectMeta{Name: ConfigName, Namespace: resolverconfig.ResolversNamespace(system.Namespace())},
			Data:       map[string]string{ConfigDefaultImage: image, ConfigAllowedTargets: "oci://registry.example.com/"},
		}},
		Pipelines:          []*v1.Pipeline{p},
		Tasks:              []*v1.Task{task},
		ResolutionRequests: []*v1beta1.ResolutionRequest{request},
	}
	golden := filepath.Join("testdata", "taskref.golden.yaml")
	r := &Resolver{Version: "v0.0.1-test"}
	if *update {
		res, err := (&Resolver{Client: fake.NewSimpleClientset(p, task), Version: r.Version}).Resolve(
			withConfig(common.InjectRequestNamespace(ctx, "team-a"), d.ConfigMaps[0].Data), &request.Spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, res.Data(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	strict(t, want)
	status := &v1beta1.ResolutionRequestStatus{
		Status: duckv1.Status{
			Annotations: map[string]string{
				inject.AnnotationFrom:  "Pipeline team-a/build-go",
				inject.AnnotationTasks: "build",
			},
		},
		ResolutionRequestStatusFields: v1beta1.ResolutionRequestStatusFields{
			Data: base64.StdEncoding.Strict().EncodeToString(want),
			RefSource: &v1.RefSource{
				URI:    "/apis/tekton.dev/v1/namespaces/team-a/pipeline/build-go@uid-1",
				Digest: map[string]string{"sha256": sha256Hex(want)},
			},
		},
	}
	status.Source = status.RefSource
	frtesting.RunResolverReconcileTest(ctx, t, d, r, request, status, nil)
}
