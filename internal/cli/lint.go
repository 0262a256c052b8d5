package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/lint"
)

// errFindings is returned when an error-level finding exists (exit 1).
var errFindings = errors.New("lint found errors")

func newLint() *cobra.Command {
	var (
		output, workDir string
		disable         []string
		listRules       bool
	)
	cmd := &cobra.Command{
		Use:   "lint PATH...",
		Short: "Check Tekton YAML for the mistakes that make a cache miss or go stale (exit 1 on an error-level finding)",
		Long: `lint reads Tekton YAML (files, or directories walked for *.yaml and *.yml;
several documents per file): Pipelines, PipelineRuns, Tasks, TaskRuns and
StepActions. It finds the cache steps (tekton-cache's StepActions, the
reference tool's in both param generations, vendored copies, scripts that run
a cache binary) and prints each finding as

  file:line:col: severity rule-id: message; fix: what to change

A finding is disabled by a comment on its line (or alone on the line above):
# cache-lint: disable=rule-id[,rule-id]; for a whole file:
# cache-lint: disable-file=rule-id. docs/LINT.md explains every rule.`,
		Example: `  cache lint .tekton/
  cache lint --workingdir . --output sarif .tekton/ > cache-lint.sarif
  cache lint --disable floating-image pipelines/build.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if listRules {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				for _, r := range lint.Rules {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.ID, r.Severity, r.Summary)
				}
				return tw.Flush()
			}
			if len(args) == 0 {
				return usageError{errors.New("no PATH given: pass Tekton YAML files or directories, e.g. cache lint .tekton/")}
			}
			if output != "text" && output != "json" && output != "sarif" {
				return usageError{fmt.Errorf("--output %q: use text, json or sarif", output)}
			}
			fs, err := lint.Lint(args, lint.Options{WorkDir: workDir, Disable: disable})
			if err != nil {
				return usageError{err}
			}
			w := cmd.OutOrStdout()
			switch output {
			case "json":
				err = lint.WriteJSON(w, fs)
			case "sarif":
				err = lint.WriteSARIF(w, fs, version())
			default:
				err = lint.WriteText(w, fs)
			}
			if err != nil {
				return err
			}
			if lint.HasErrors(fs) {
				return fmt.Errorf("%w: %d finding(s)", errFindings, len(fs))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&output, "output", "text", "text, json or sarif (SARIF 2.1.0, for code-scanning UIs)")
	cmd.Flags().StringVar(&workDir, "workingdir", "", "a checkout of the repository the pipelines build, for the rules that read it (vendored-modules)")
	cmd.Flags().StringSliceVar(&disable, "disable", nil, "rule ids not to report (repeatable or a comma list)")
	cmd.Flags().BoolVar(&listRules, "list-rules", false, "print every rule's id, severity and summary")
	return cmd
}
