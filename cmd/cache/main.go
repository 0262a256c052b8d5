// Command cache saves and restores CI caches. See `cache --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/tekton-cache/tekton-cache/internal/cli"
)

func main() {
	// SIGTERM (a TaskRun's timeout or cancellation) and SIGINT cancel the
	// command, which cleans up as on any failure and exits 128+signal.
	ctx, stop := cli.SignalContext(context.Background())
	// CACHE_CPUPROFILE=file writes a CPU profile, for `go tool pprof`.
	if p := os.Getenv("CACHE_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "warning: CACHE_CPUPROFILE: %v\n", err)
		} else {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	pprof.StopCPUProfile()
	os.Exit(code)
}
