package cli

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

// addProfileFlag adds the hidden --cpuprofile FILE (or CACHE_CPUPROFILE)
// to root: a CPU profile of the command, for `go tool pprof`. It starts
// before the command runs; the func returned stops it and closes the file,
// and must be called once the command is done.
func addProfileFlag(root *cobra.Command, stderr io.Writer) (stop func()) {
	var path, what string
	var f *os.File
	root.PersistentFlags().StringVar(&path, "cpuprofile", "", "write a CPU profile of the command to this file, for go tool pprof")
	_ = root.PersistentFlags().MarkHidden("cpuprofile") // the flag was just added
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		what = "--cpuprofile"
		if path == "" {
			path, what = os.Getenv(envName("cpuprofile")), envName("cpuprofile")
		}
		if path == "" {
			return nil
		}
		pf, err := os.Create(path)
		if err == nil {
			if err = pprof.StartCPUProfile(pf); err != nil {
				pf.Close()
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "warning: %s: %v\n", what, err)
			return nil
		}
		f = pf
		return nil
	}
	return func() {
		if f == nil {
			return
		}
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "warning: %s: %v\n", what, err)
		}
		f = nil
	}
}
