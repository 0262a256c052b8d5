package cli

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=v1.2.3".
var Version = ""

// version returns Version, or the module version the binary was built from.
func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// NewRoot returns the `cache` command.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "cache",
		Short: "Save and restore CI caches (Go, npm, Maven, pip ...) to OCI registries, S3, GCS, Azure or a directory",
		Long: `cache saves directories to a store at the end of a CI run and restores them at
the start of the next, under a key computed from lock files.

Every flag can also be set with an environment variable: CACHE_ and the flag
name in capitals, '-' as '_' (--restore-keys is CACHE_RESTORE_KEYS).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	// Every flag cobra cannot parse (unknown, missing its value, a value
	// of the wrong type) is a usage error: exit 2.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newFetch(), newUpload(), newKey(), newListCmd(), newDelete(), newPrune(), newInspect(), newDiff(), newLint(), newExplain(), newServe(), newVersion())
	return root
}

// Execute runs the command line and returns the process exit code: 0, 1
// for a failure under --strict or --fail-on-miss, 2 for a misconfiguration
// (a usage error, a bad store URL, key, pattern, working dir or value).
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	defer softMemoryLimit()()
	root := NewRoot()
	stopProfile := addProfileFlag(root, stderr)
	defer stopProfile()
	args, findErr := joinBoolValues(root, args)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if findErr != nil {
		// No such command: cobra's Find failed before any flag was read.
		err = usageError{err}
	}
	err = inFlagTerms(err)
	if in, ok := interrupted(ctx); ok {
		msg := oneLine(err.Error())
		if !strings.Contains(msg, in.Error()) {
			msg = in.Error() + ": " + msg
		}
		fmt.Fprintf(stderr, "error: %s\n", msg)
		return in.ExitCode()
	}
	fmt.Fprintf(stderr, "error: %s\n", oneLine(err.Error()))
	if isConfigError(err) {
		return 2
	}
	return 1
}

// joinBoolValues turns "--insecure false" into "--insecure=false" for the
// boolean flags of the command args run: the reference tool's StepAction
// scripts (and their vendored copies) pass booleans that way.
// The error is Find's: an unknown command.
func joinBoolValues(root *cobra.Command, args []string) ([]string, error) {
	cmd, _, err := root.Find(args)
	if err != nil || cmd == nil {
		return args, err
	}
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...), nil
		}
		name, isLong := strings.CutPrefix(a, "--")
		if isLong && !strings.Contains(name, "=") && i+1 < len(args) {
			if f := cmd.Flags().Lookup(name); f != nil && f.Value.Type() == "bool" {
				if _, perr := strconv.ParseBool(args[i+1]); perr == nil {
					out = append(out, a+"="+args[i+1])
					i++
					continue
				}
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// noArgs refuses positional arguments with a line that says what to write.
// exactArgs accepts n arguments, named by what in the error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		if len(args) > 0 && strings.Contains(args[0], "://") {
			return usageError{fmt.Errorf("%q looks like a store URL: pass it with --store, then %s", args[0], what)}
		}
		return usageError{fmt.Errorf("cache %s takes %s (%d given): see cache %s --help", cmd.Name(), what, len(args), cmd.Name())}
	}
}

func noArgs(uriFlag string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		if strings.Contains(args[0], "://") && uriFlag != "" {
			return usageError{fmt.Errorf("unexpected argument %q: pass the store URI with --%s %s", args[0], uriFlag, args[0])}
		}
		return usageError{fmt.Errorf("unexpected argument %q: every value goes with a flag (--flag value or --flag=value); see cache %s --help", args[0], cmd.Name())}
	}
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), version())
		},
	}
}
