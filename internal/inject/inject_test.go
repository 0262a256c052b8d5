package inject

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// goldenOptions are the options of the golden cases: each case's
// workspaces and mode vary, the rest is common.
func goldenOptions(workspaces ...string) Options {
	return Options{
		Workspaces:  workspaces,
		Files:       []string{"**/go.sum"},
		Target:      "oci://registry.example.com/cache/build:{{workspace}}-{{hash}}",
		RestoreKeys: []string{"{{workspace}}-"},
		Image:       "registry.example.com/tekton-cache/cache:v0.1.0",
		By:          "cache inject (test)",
	}
}

// GoldenCases names each directory under testdata and the options its
// pipeline.yaml is rewritten with into golden.yaml (test/tekton validates
// every golden.yaml with Tekton's own code).
var goldenCases = map[string]func() Options{
	"embedded":       func() Options { return goldenOptions("go-cache") },
	"taskref":        func() Options { return goldenOptions("go-cache") },
	"finally":        func() Options { o := goldenOptions("npm-cache"); o.Files = []string{"package-lock.json"}; return o },
	"two-workspaces": func() Options { return goldenOptions("go-cache", "gomod-cache") },
	"name-clash":     func() Options { return goldenOptions("go-cache") },
	"steptemplate":   func() Options { return goldenOptions("go-cache") },
	"remote-task":    func() Options { return goldenOptions("go-cache") },
	"pipelinerun":    func() Options { return goldenOptions("go-cache") },
	"stepaction": func() Options {
		o := goldenOptions("go-cache", "gomod-cache")
		o.Mode, o.Image = ModeStepAction, ""
		return o
	},
}

// filesTasks looks Tasks up in tasks.yaml beside the pipeline.
func filesTasks(t *testing.T, dir string) Tasks {
	return func(name string) ([]byte, error) {
		data, err := os.ReadFile(filepath.Join(dir, "tasks.yaml"))
		if err != nil {
			return nil, err
		}
		docs, err := Decode(data)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			if Name(d) == name {
				var b bytes.Buffer
				if err := Encode(&b, d); err != nil {
					return nil, err
				}
				return b.Bytes(), nil
			}
		}
		return nil, errors.New("no Task " + name)
	}
}

func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "*", "pipeline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != len(goldenCases) {
		t.Errorf("%d cases under testdata, %d in goldenCases", len(dirs), len(goldenCases))
	}
	for name, opts := range goldenCases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", name)
			in, err := os.ReadFile(filepath.Join(dir, "pipeline.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			got, rep, err := RewriteYAML(in, opts(), filesTasks(t, dir))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("report: %+v", rep)
			golden := filepath.Join(dir, "golden.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (go test -run TestGolden -update to accept):\n%s", golden, got)
			}
		})
	}
}

// TestRewriteRefuses checks that bad options and pipelines the rewrite
// cannot handle give one line naming what is wrong, and leave the input
// as it was.
func TestRewriteRefuses(t *testing.T) {
	embedded, err := os.ReadFile(filepath.Join("testdata", "embedded", "pipeline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	taskref, err := os.ReadFile(filepath.Join("testdata", "taskref", "pipeline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		in   []byte
		opts func(o *Options)
		want string
	}{
		{"no workspaces", embedded, func(o *Options) { o.Workspaces = nil }, "no workspaces to cache"},
		{"undeclared workspace", embedded, func(o *Options) { o.Workspaces = []string{"nope"} }, `declares no workspace "nope"`},
		{"no target", embedded, func(o *Options) { o.Target = "" }, "no target"},
		{"target not a URL", embedded, func(o *Options) { o.Target = "registry/cache:{{hash}}" }, "is not a store URL"},
		{"two workspaces one key", embedded, func(o *Options) { o.Workspaces = []string{"go-cache", "source"}; o.Target = "oci://r/c:{{hash}}" }, "has no {{workspace}}"},
		{"source cached", embedded, func(o *Options) { o.Source = "go-cache" }, "is also cached"},
		{"no image", embedded, func(o *Options) { o.Image = "" }, "no image"},
		{"bad mode", embedded, func(o *Options) { o.Mode = "sidecar" }, `mode "sidecar"`},
		{"task not given", taskref, func(*Options) {}, "refers to Task go-build"},
		{"v1beta1", bytes.Replace(embedded, []byte("tekton.dev/v1"), []byte("tekton.dev/v1beta1"), 1), func(*Options) {}, "want a tekton.dev/v1 Pipeline"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := goldenOptions("go-cache")
			c.opts(&o)
			docs, err := Decode(c.in)
			if err != nil {
				t.Fatal(err)
			}
			var before bytes.Buffer
			if err := Encode(&before, docs[0]); err != nil {
				t.Fatal(err)
			}
			_, err = Rewrite(docs[0], o, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line with %q", err, c.want)
			}
			var after bytes.Buffer
			if err := Encode(&after, docs[0]); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before.Bytes(), after.Bytes()) {
				t.Error("a failed rewrite changed its input")
			}
		})
	}
}

func TestStepName(t *testing.T) {
	taken := map[string]bool{"cache-fetch-a": true}
	if got := stepName("cache-fetch-a", taken); got != "cache-fetch-a-2" {
		t.Errorf("clash: %q", got)
	}
	if got := stepName("cache-fetch-Go_Cache", taken); got != "cache-fetch-go-cache" {
		t.Errorf("made a DNS label: %q", got)
	}
	long := "cache-upload-" + strings.Repeat("w", 80)
	a, b := stepName(long, taken), stepName(long, taken)
	if len(a) > 63 || len(b) > 63 || a == b {
		t.Errorf("long names %q (%d), %q (%d): want distinct, at most 63", a, len(a), b, len(b))
	}
}
