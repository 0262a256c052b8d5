package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/tekton-cache/tekton-cache/internal/inject"
)

func newInject() *cobra.Command {
	var (
		files, workspaces, patterns, restoreKeys []string
		o                                        inject.Options
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE --workspaces WS --files GLOB --target URL",
		Short: "Print a Pipeline with cache steps added to every task that binds a cached workspace",
		Long: `inject reads a tekton.dev/v1 Pipeline (or a PipelineRun with an embedded
pipelineSpec) and prints it with, in every task and finally task that binds
one of --workspaces, the task's spec embedded (a taskRef to a Task given with
-f is inlined), a cache-fetch step first and a cache-upload step last for each
cached workspace (the upload skipped when the fetch restored the exact key),
and annotations that say what was added. A task referenced through a
resolver is left as it is, with a warning (on stderr and in an annotation).

Bind the cached workspaces to emptyDir in the PipelineRun. The same rewrite
runs in the cluster as the "cache" resolver (docs/RESOLVER.md).`,
		Example: `  cache inject -f pipeline.yaml -f tasks/ --workspaces go-cache,gomod-cache \
    --files '**/go.sum' --target 'oci://registry.example.com/cache/{{workspace}}:{{hash}}' \
    --image registry.example.com/tekton-cache/cache:v0.2.0 > pipeline-cached.yaml`,
		Args: noArgs(""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return usageError{err}
			}
			if len(files) == 0 {
				return usageError{errors.New("no -f given: pass the Pipeline (or PipelineRun) file, and the files of the Tasks its taskRefs name")}
			}
			o.Workspaces, o.Files, o.RestoreKeys = workspaces, patterns, restoreKeys
			if o.Mode == "" || o.Mode == inject.ModeInline {
				if o.Image == "" {
					return usageError{errors.New("no --image: pass the cache image the inlined steps run (the one `make image` pushed), or --mode stepaction to use the installed StepActions")}
				}
			}
			if err := o.Validate(); err != nil {
				return usageError{flagWords(err)}
			}
			o.By = "cache inject " + version()
			var targets []*yaml.Node
			var refRuns []string // PipelineRuns that refer to their Pipeline
			tasks := map[string]*yaml.Node{}
			for _, f := range files {
				docs, err := readDocs(cmd.InOrStdin(), f)
				if err != nil {
					return usageError{err}
				}
				for _, d := range docs {
					switch _, kind := inject.Kind(d); kind {
					case "PipelineRun":
						if !inject.HasPipelineSpec(d) {
							refRuns = append(refRuns, inject.Name(d))
							continue
						}
						targets = append(targets, d)
					case "Pipeline":
						targets = append(targets, d)
					case "Task":
						tasks[inject.Name(d)] = d
					}
				}
			}
			if len(targets) == 0 {
				if len(refRuns) > 0 {
					return usageError{fmt.Errorf("PipelineRun %s refers to its Pipeline: pass the Pipeline's file with -f (a PipelineRun is rewritten only with an embedded pipelineSpec)", refRuns[0])}
				}
				return usageError{fmt.Errorf("no Pipeline or PipelineRun in %s", strings.Join(files, ", "))}
			}
			for _, r := range refRuns {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: PipelineRun %s refers to its Pipeline: left out (the Pipeline is rewritten)\n", r)
			}
			lookup := func(name string) ([]byte, error) {
				d, ok := tasks[name]
				if !ok {
					return nil, fmt.Errorf("refers to Task %s, which no -f file holds: pass its file with -f", name)
				}
				var b bytes.Buffer
				err := inject.Encode(&b, d)
				return b.Bytes(), err
			}
			for _, d := range targets {
				_, kind := inject.Kind(d)
				o.From = kind + " " + inject.Name(d)
				rep, err := inject.Rewrite(d, o, lookup)
				if err != nil {
					return usageError{err}
				}
				for _, w := range rep.Warnings() {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s %s: %s\n", kind, inject.Name(d), w)
				}
			}
			return inject.Encode(cmd.OutOrStdout(), targets...)
		},
	}
	fs := cmd.Flags()
	fs.VarP(newList(&files, true), "filename", "f", `YAML file with the Pipeline or PipelineRun, and files with the Tasks its taskRefs name ("-": standard input; repeatable)`)
	fs.Var(newList(&workspaces, false), "workspaces", "the Pipeline's workspaces to cache (repeatable or a comma list), e.g. go-cache,gomod-cache")
	fs.Var(newList(&patterns, false), "files", "lock-file globs the key's {{hash}} is computed from, relative to the source workspace, e.g. '**/go.sum' (repeatable or a comma list). Default: detected from the lock files found")
	fs.StringVar(&o.Source, "source", "", "the Pipeline workspace that holds the lock files. Default: each task's first bound workspace that is not cached")
	fs.StringVar(&o.Target, "target", "", "store URL template: {{workspace}} is the cached workspace, {{hash}} the lock files' hash, e.g. oci://registry.example.com/cache/{{workspace}}:{{hash}}")
	fs.Var(newList(&restoreKeys, false), "restore-keys", "key prefixes tried when the exact key misses ({{workspace}} is replaced; repeatable or a comma list)")
	fs.StringVar(&o.Image, "image", "", "the cache image the inlined steps run (inline mode)")
	fs.StringVar(&o.Mode, "mode", inject.ModeInline, "inline (the steps carry the cache image and script) or stepaction (refs to the installed cache-fetch and cache-upload StepActions)")
	fs.BoolVar(&o.Insecure, "insecure", false, "let the steps use a plain-HTTP or self-signed store")
	return cmd
}

// flagWords names the flag an Options error is about.
func flagWords(err error) error {
	return fmt.Errorf("%w (see cache inject --help for --workspaces, --target, --image, --mode, --source)", err)
}

// readDocs reads the YAML documents of a file, of the *.yaml and *.yml
// files of a directory, or of standard input for "-".
func readDocs(stdin io.Reader, path string) ([]*yaml.Node, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(stdin)
	} else if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
		var docs []*yaml.Node
		for _, ext := range []string{"*.yaml", "*.yml"} {
			names, _ := filepath.Glob(filepath.Join(path, ext))
			for _, n := range names {
				d, err := readDocs(stdin, n)
				if err != nil {
					return nil, err
				}
				docs = append(docs, d...)
			}
		}
		return docs, nil
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	docs, err := inject.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return docs, nil
}
