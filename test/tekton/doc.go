// Package tekton checks the project's Tekton surfaces without a cluster:
//
//   - Load decodes every YAML we ship (tekton/, examples/, the rendered
//     release) strictly with Tekton's own scheme, and Validate runs the
//     defaulting and validation the admission webhook would.
//   - LintScripts is a rule of our own: no `$(params.` inside a script, so
//     params reach programs through env or args, never spliced into shell.
//   - Harness resolves a Task's StepAction refs and substitutes params,
//     results and workspaces with Tekton's reconciler functions, then runs
//     each step's script with sh, the locally built `cache` binary standing
//     in for the image, passing step results the way the pod does.
//
// It is a separate Go module so that tektoncd/pipeline never enters the main
// module or the `cache` binary. Run its tests with `cd test/tekton && go test ./...`.
package tekton
