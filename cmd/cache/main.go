// Command cache saves and restores CI caches. See `cache --help`.
package main

import (
	"context"
	"os"

	"github.com/tekton-cache/tekton-cache/internal/cli"
)

func main() {
	// SIGTERM (a TaskRun's timeout or cancellation) and SIGINT cancel the
	// command, which cleans up as on any failure and exits 128+signal.
	ctx, stop := cli.SignalContext(context.Background())
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
