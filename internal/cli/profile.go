package cli

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

// addProfileFlag adds the hidden --cpuprofile FILE (or CACHE_CPUPROFILE)
// to root: a CPU profile of the command, for `go tool pprof`; and the
// hidden --memprofile FILE (CACHE_MEMPROFILE): the heap profile ("allocs":
// what was allocated where, and what is still in use) written when the
// command is done. The CPU profile starts before the command runs; the
// func returned stops it, writes the heap profile and closes the files,
// and must be called once the command is done.
func addProfileFlag(root *cobra.Command, stderr io.Writer) (stop func()) {
	var path, what, memPath string
	var f *os.File
	root.PersistentFlags().StringVar(&path, "cpuprofile", "", "write a CPU profile of the command to this file, for go tool pprof")
	root.PersistentFlags().StringVar(&memPath, "memprofile", "", "write a heap profile to this file when the command is done, for go tool pprof")
	_ = root.PersistentFlags().MarkHidden("cpuprofile") // the flags were just added
	_ = root.PersistentFlags().MarkHidden("memprofile")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if memPath == "" {
			memPath = os.Getenv(envName("memprofile"))
		}
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
		if memPath != "" {
			if err := writeHeapProfile(memPath); err != nil {
				fmt.Fprintf(stderr, "warning: --memprofile: %v\n", err)
			}
			memPath = ""
		}
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

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	// The profile is as of the last collection: one now counts every
	// allocation of the command, not those before the last automatic one.
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
