package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/inject"
)

// TestInject runs `cache inject` on the rewrite's taskref fixture (the
// Pipeline and its Task in two -f files): the Task is inlined, the
// annotations name the command, and bad flags exit 2 with one line.
func TestInject(t *testing.T) {
	dir := filepath.Join("..", "inject", "testdata", "taskref")
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Execute(context.Background(), append([]string{"inject"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	ok := []string{"-f", filepath.Join(dir, "pipeline.yaml"), "-f", filepath.Join(dir, "tasks.yaml"),
		"--workspaces", "go-cache", "--files", "**/go.sum", "--target", "oci://registry.example.com/cache/{{workspace}}:{{hash}}",
		"--image", "registry.example.com/cache:v1"}
	code, out, stderr := run(ok...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	docs, err := inject.Decode([]byte(out))
	if err != nil || len(docs) != 1 {
		t.Fatalf("output: %d documents, %v", len(docs), err)
	}
	for _, want := range []string{"taskSpec:", "name: cache-fetch-cache", "name: cache-upload-cache", inject.AnnotationTask + ": go-build",
		inject.AnnotationBy + ": cache inject ", "value: oci://registry.example.com/cache/go-cache:{{hash}}"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "taskRef:") {
		t.Error("the taskRef is still there")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{ok[4:], "no -f given"},
		{append(ok[:4:4], "--workspaces", "go-cache", "--target", "oci://r/c:{{hash}}"), "no --image"},
		{append(ok[:2:2], "--workspaces", "go-cache", "--image", "i", "--target", "oci://r/c:{{hash}}"), "refers to Task go-build"},
		{append(ok, "--mode", "sidecar"), `mode "sidecar"`},
		{append(ok, "--nope"), "unknown flag"},
		{append(ok[:0:0], "-f", filepath.Join("..", "..", "examples", "resolver", "pipelinerun-go-resolver.yaml"), "--workspaces", "w", "--target", "oci://r/c", "--image", "i"), "refers to its Pipeline"},
		{append(ok[:0:0], "-f", filepath.Join(dir, "missing.yaml"), "--workspaces", "w", "--target", "oci://r/c", "--image", "i"), "no such file"},
	} {
		code, _, stderr := run(c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("cache inject %v: exit %d, stderr %q; want exit 2 and one line with %q", c.args, code, stderr, c.want)
		}
	}
}
