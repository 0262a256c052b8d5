package tekton

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
)

// seedStore saves three entries (go-1, go-2, go-3, in that order) into a
// new file:// store with the cache binary, and returns its URL.
func seedStore(t *testing.T) string {
	t.Helper()
	bin := cacheBinary(t)
	store := "file://" + t.TempDir()
	src := t.TempDir()
	for _, k := range []string{"go-1", "go-2", "go-3"} {
		if err := os.WriteFile(filepath.Join(src, k), []byte(strings.Repeat(k, 5000)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "upload", "--store", store, "--key", k, "--folder", src).CombinedOutput(); err != nil {
			t.Fatalf("upload %s: %v\n%s", k, err, out)
		}
	}
	return store
}

// entryKeys lists the keys of a store with `cache list`.
func entryKeys(t *testing.T, store string) []string {
	t.Helper()
	out, err := exec.Command(cacheBinary(t), "list", "--store", store).Output()
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var keys []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "go-") {
			keys = append(keys, f[0])
		}
	}
	slices.Sort(keys)
	return keys
}

// TestPruneTask runs examples/prune's Task: a dry run changes nothing; a
// run keeping one entry leaves the newest.
func TestPruneTask(t *testing.T) {
	h := newHarness(t)
	task := loadObject[*v1.Task](t, "examples/prune/task-cache-prune.yaml")
	store := seedStore(t)
	run := func(name string, params ...v1.Param) *TaskRunResult {
		t.Helper()
		res, err := h.Run(context.Background(), filepath.Join(t.TempDir(), name), TaskRunInput{Spec: &task.Spec, Params: append(v1.Params{stringParam("store", store)}, params...)})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	dry := run("dry", stringParam("keep", "1"), stringParam("dry-run", "true"))
	if !strings.Contains(dry.Step("prune").Output, "would remove 2 entries") {
		t.Fatalf("dry run: %s", dry.Step("prune").Output)
	}
	if got := entryKeys(t, store); len(got) != 3 {
		t.Fatalf("the dry run removed entries: %v", got)
	}
	run("keep-1", stringParam("keep", "1"), stringParam("grace", "0"))
	if got := entryKeys(t, store); !slices.Equal(got, []string{"go-3"}) {
		t.Fatalf("entries left %v, want [go-3]", got)
	}
}

// TestPruneCronJob runs the container of examples/prune's CronJob (its
// command and args, the store pointed at a directory) with the binary, so
// that every flag it passes is one prune takes.
func TestPruneCronJob(t *testing.T) {
	cj := loadObject[*batchv1.CronJob](t, "examples/prune/cronjob-prune.yaml")
	c := cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
	if len(c.Command) != 2 || c.Command[0] != ImageBinary || c.Command[1] != "prune" {
		t.Fatalf("command %q, want [%s prune]", c.Command, ImageBinary)
	}
	store := seedStore(t)
	args := []string{"prune"}
	sawStore := false
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--store=") {
			a, sawStore = "--store="+store, true
		}
		args = append(args, a)
	}
	if !sawStore {
		t.Fatal("the CronJob passes no --store")
	}
	out, err := exec.Command(cacheBinary(t), append(args, "--dry-run")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "plan: would remove 0 entries") {
		t.Fatalf("cache %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
