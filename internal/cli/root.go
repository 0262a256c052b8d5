package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
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
	}
	root.AddCommand(newFetch(), newUpload(), newKey(), newVersion())
	return root
}

// Execute runs the command line and returns the process exit code: 0, 1
// for a failure (or a miss with --strict), 2 for a usage error.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "error: %s\n", oneLine(err.Error()))
	var usage usageError
	if errors.As(err, &usage) || isFlagError(err) {
		return 2
	}
	return 1
}

type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func isFlagError(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown flag") || strings.HasPrefix(s, "unknown shorthand") ||
		strings.HasPrefix(s, "unknown command") || strings.Contains(s, "flag needs an argument") ||
		strings.HasPrefix(s, "invalid argument")
}

// oneLine folds a multi-line error (SDKs like them) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// withStore is err on one line, naming the store unless it already does.
func withStore(err error, storeURL string) string {
	msg := oneLine(err.Error())
	name := store.Redact(storeURL)
	if strings.Contains(msg, strings.SplitN(name, "?", 2)[0]) {
		return msg
	}
	return name + ": " + msg
}

func openStore(ctx context.Context, o *Options, url string) (store.Store, error) {
	return all.Mux().Open(ctx, url, store.Options{Insecure: o.Insecure, Logf: func(f string, a ...any) { o.infof(f, a...) }})
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
