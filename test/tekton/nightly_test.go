package tekton

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// TestNightlyTrigger: the CronJob creates the PipelineRun its ConfigMap
// holds, which is a valid run of the nightly-image Pipeline (every param
// it passes is one the Pipeline declares, every required one given), as a
// ServiceAccount whose Role lets it create PipelineRuns.
func TestNightlyTrigger(t *testing.T) {
	const file = "examples/nightly-image/cronjob-nightly-image.yaml"
	cj := loadObject[*batchv1.CronJob](t, file)
	cm := loadObject[*corev1.ConfigMap](t, file)
	role := loadObject[*rbacv1.Role](t, file)
	pod := cj.Spec.JobTemplate.Spec.Template.Spec
	c := pod.Containers[0]
	if len(c.Command) != 4 || c.Command[1] != "create" || c.Command[3] != "/pipelinerun/pipelinerun.yaml" ||
		len(pod.Volumes) != 1 || pod.Volumes[0].ConfigMap == nil || pod.Volumes[0].ConfigMap.Name != cm.Name ||
		len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/pipelinerun" {
		t.Fatalf("the CronJob does not create the ConfigMap's PipelineRun: %q, %+v, %+v", c.Command, pod.Volumes, c.VolumeMounts)
	}
	if r := role.Rules; len(r) != 1 || !slices.Equal(r[0].Resources, []string{"pipelineruns"}) || !slices.Equal(r[0].Verbs, []string{"create"}) || pod.ServiceAccountName != "nightly-image-trigger" {
		t.Errorf("the trigger's Role %+v (ServiceAccount %q): want create on pipelineruns only", r, pod.ServiceAccountName)
	}
	objs, err := Decode(file+"#ConfigMap", bytes.NewReader([]byte(cm.Data["pipelinerun.yaml"])))
	if err != nil || len(objs) != 1 {
		t.Fatalf("the ConfigMap's pipelinerun.yaml: %v (%d objects)", err, len(objs))
	}
	pr, ok := objs[0].Obj.(*v1.PipelineRun)
	if !ok {
		t.Fatalf("the ConfigMap holds a %T, want a PipelineRun", objs[0].Obj)
	}
	if err := Validate(context.Background(), pr); err != nil {
		t.Errorf("the ConfigMap's PipelineRun: %v", err)
	}
	p := loadPipeline(t, "examples/nightly-image/pipeline-nightly-image.yaml")
	if pr.Spec.PipelineRef == nil || pr.Spec.PipelineRef.Name != p.Name || pr.GenerateName == "" {
		t.Errorf("the PipelineRun runs %+v (generateName %q), want %s with a generateName", pr.Spec.PipelineRef, pr.GenerateName, p.Name)
	}
	given := map[string]bool{}
	for _, param := range pr.Spec.Params {
		given[param.Name] = true
	}
	for _, spec := range p.Spec.Params {
		if spec.Default == nil && !given[spec.Name] {
			t.Errorf("the PipelineRun does not give the required param %s", spec.Name)
		}
		delete(given, spec.Name)
	}
	for n := range given {
		t.Errorf("the PipelineRun gives %s, which the Pipeline does not declare", n)
	}
}

// TestNightlyGoPipelineHasNoCacheSteps: the Go pipeline on the nightly
// image builds in the checkout path the image was warmed in, without
// cache-fetch or cache-upload.
func TestNightlyGoPipelineHasNoCacheSteps(t *testing.T) {
	p := loadPipeline(t, "examples/nightly-image/pipeline-go-nightly.yaml")
	task := loadObject[*v1.Task](t, "examples/nightly-image/task-bake-go-image.yaml")
	steps := p.Spec.Tasks[0].TaskSpec.Steps
	for _, s := range steps {
		if s.Ref != nil && strings.HasPrefix(s.Ref.Name, "cache-") {
			t.Errorf("step %s uses %s", s.Name, s.Ref.Name)
		}
	}
	build := steps[len(steps)-1]
	var warm v1.Step
	for _, s := range task.Spec.Steps {
		if s.Name == "warm" {
			warm = s
		}
	}
	if build.Image != "$(params.image)" || build.WorkingDir != warm.WorkingDir || warm.Image != "$(params.base-image)" {
		t.Errorf("build in %q on %q, warm-up in %q on %q: want the same directory, the nightly image and the base", build.WorkingDir, build.Image, warm.WorkingDir, warm.Image)
	}
}

// TestNightlyBakeStep runs the bake step of bake-go-image (its command and
// args, params and volumes replaced by a local registry and directories)
// with the binary: every flag is one bake takes, and the image it pushes
// has the caches where the warm-up's mounts had them.
func TestNightlyBakeStep(t *testing.T) {
	task := loadObject[*v1.Task](t, "examples/nightly-image/task-bake-go-image.yaml")
	var bakeStep, warm v1.Step
	for _, s := range task.Spec.Steps {
		switch s.Name {
		case "bake":
			bakeStep = s
		case "warm":
			warm = s
		}
	}
	if len(bakeStep.Command) != 2 || bakeStep.Command[0] != ImageBinary || bakeStep.Command[1] != "bake" {
		t.Fatalf("command %q, want [%s bake]", bakeStep.Command, ImageBinary)
	}
	reg := testserver.Registry(t, "", "")
	baseRef := reg + "/library/golang:1.26"
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: ggv1.Descriptor{Platform: &ggv1.Platform{OS: "linux", Architecture: "amd64"}}})
	tag, err := name.NewTag(baseRef, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	// The volumes: each bake mount's directory, with a file in it.
	root := t.TempDir()
	dirs := map[string]string{}
	for _, m := range bakeStep.VolumeMounts {
		d := filepath.Join(root, m.Name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f-"+m.Name), []byte(m.Name), 0o644); err != nil {
			t.Fatal(err)
		}
		dirs[m.MountPath] = d
	}
	params := map[string]string{"base-image": baseRef, "platform": "linux/amd64", "image-repo": reg + "/ci/go", "insecure": "true"}
	results := t.TempDir()
	var args []string
	for _, a := range bakeStep.Args {
		for k, v := range params {
			a = strings.ReplaceAll(a, "$(params."+k+")", v)
		}
		for mount, d := range dirs {
			a = strings.ReplaceAll(a, "="+mount+":", "="+d+":")
		}
		a = strings.ReplaceAll(a, "=/tekton/results", "="+results)
		if strings.Contains(a, "$(") {
			t.Fatalf("arg %q: a param the test does not set", a)
		}
		args = append(args, a)
	}
	cmd := exec.Command(cacheBinary(t), append([]string{"bake"}, args...)...)
	cmd.Env = append(os.Environ(), "CACHE_INSECURE=true", "DOCKER_CONFIG="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cache bake %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, r := range task.Spec.Results {
		if b, err := os.ReadFile(filepath.Join(results, r.Name)); err != nil || len(b) == 0 {
			t.Errorf("result %s not written: %v", r.Name, err)
		}
	}
	// The image's layers put each volume where the warm-up mounted it.
	pushed, err := name.ParseReference(reg+"/ci/go:nightly", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	bi, err := remote.Index(pushed)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := bi.IndexManifest()
	baked, err := bi.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(baked)
	defer rc.Close()
	names := map[string]bool{}
	readNames(t, rc, names)
	for _, m := range warm.VolumeMounts {
		want := strings.TrimPrefix(m.MountPath, "/") + "/f-" + m.Name
		if !names[want] {
			t.Errorf("the image lacks %s: the warm-up's %s mount is not baked where it was", want, m.Name)
		}
	}
	cf, _ := baked.ConfigFile()
	for _, e := range warm.Env {
		if strings.HasPrefix(e.Name, "GO") && e.Name != "GOBIN" && !slices.Contains(cf.Config.Env, e.Name+"="+e.Value) {
			t.Errorf("the image's env %q lacks the warm-up's %s=%s", cf.Config.Env, e.Name, e.Value)
		}
	}
}

// readNames adds the names in the tar stream r to names.
func readNames(t *testing.T, r io.Reader, names map[string]bool) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = true
	}
}
