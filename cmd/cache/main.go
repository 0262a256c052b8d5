// Command cache saves and restores CI caches. See `cache --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/tekton-cache/tekton-cache/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
