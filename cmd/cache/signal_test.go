package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// TestSignalEndsBlockedFetch sends SIGTERM (what Tekton sends when a
// TaskRun times out or is cancelled) and SIGINT to a real `cache fetch`
// blocked on a stalled download: it must exit within a few seconds, with
// 128+signal, say why, leave no temporary file and the folder as it was.
func TestSignalEndsBlockedFetch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a registry")
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			bin, url, dst, proxy, _ := stalledRestore(t)
			before := testtree.Snapshot(t, dst)
			results := filepath.Join(t.TempDir(), "results")
			cmd, out := startBlockedFetch(t, bin, url, dst, proxy, "--results-dir", results)
			if len(temps(dst)) == 0 {
				t.Fatal("no temporary file in the folder when the signal is sent: the test would prove nothing")
			}
			sent := time.Now()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			var err error
			select {
			case err = <-exited:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Fatalf("still running 15 s after %s:\n%s", sig, out.String())
			}
			took := time.Since(sent)
			t.Logf("exited %s after %s: %v\n%s", took.Round(time.Millisecond), sig, err, out.String())
			if took > 5*time.Second {
				t.Errorf("took %s to end after %s: want at most 5 s", took, sig)
			}
			if code := cmd.ProcessState.ExitCode(); code != 128+int(sig) {
				t.Errorf("exit code %d after %s, want %d", code, sig, 128+int(sig))
			}
			if !strings.Contains(out.String(), "interrupted by "+sigName(sig)) {
				t.Errorf("the output does not say the command was interrupted by %s:\n%s", sigName(sig), out.String())
			}
			if b, _ := os.ReadFile(filepath.Join(results, "status")); string(b) != "error" {
				t.Errorf("status result %q, want error", b)
			}
			if b, _ := os.ReadFile(filepath.Join(results, "error")); !strings.Contains(string(b), "interrupted by "+sigName(sig)) {
				t.Errorf("error result %q does not name the signal", b)
			}
			if left := temps(dst); len(left) > 0 {
				t.Errorf("%d temporary files left after %s, e.g. %s", len(left), sig, left[0])
			}
			testtree.Equal(t, before, testtree.Snapshot(t, dst))
		})
	}
}

func sigName(s syscall.Signal) string {
	return map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT"}[s]
}
