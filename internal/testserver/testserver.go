// Package testserver starts real servers (a registry, MinIO, fake-gcs-server,
// Azurite ...) as child processes on free 127.0.0.1 ports for tests, and
// stops them by PID when the test ends.
//
// A server binary that is not installed skips the test, or fails it when
// CACHE_TEST_DISALLOW_SKIP is set (CI sets it): `make test` installs them.
package testserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/testenv"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Binary finds a server binary on PATH or in $(go env GOPATH)/bin, or skips
// (fails in CI) with the command that installs it.
func Binary(t testing.TB, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(goPath(), "bin"), filepath.Join(os.Getenv("HOME"), "go", "bin")} {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	testenv.SkipUnless(t, false, fmt.Sprintf("%s is not installed: run `make tools` or `%s`", name, install))
	return ""
}

func goPath() string {
	if gp := os.Getenv("GOPATH"); gp != "" {
		return filepath.SplitList(gp)[0]
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(out))
}

// Process is a running server.
type Process struct {
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{}
}

// Output returns what the server printed so far.
func (p *Process) Output() string { return p.out.String() }

// PID returns the server's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Start runs bin with args and env (added to a minimal environment) and
// registers its stop with t.Cleanup: SIGTERM to its PID, then SIGKILL after
// 5 s, then wait until it is gone.
func Start(t testing.TB, bin string, args, env []string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}, env...)
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	p := &Process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }() //nolint:errcheck // exit status is not interesting
	t.Cleanup(p.Stop)
	return p
}

// Stop stops the server by PID and waits for it to exit.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill() //nolint:errcheck // it may have exited
		<-p.done
	}
}

// WaitHTTP polls url until it answers with code (0: any answer) or 60 s pass.
func (p *Process) WaitHTTP(t testing.TB, url string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-p.done:
			t.Fatalf("server exited before it answered %s:\n%s", url, p.Output())
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if code == 0 || resp.StatusCode == code {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("server did not answer %s with %d within 60 s (last: %v):\n%s", url, code, err, p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// SyncBuffer is a log that several goroutines may write at once; it
// keeps the first MiB.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 {
		return len(p), nil // keep the first MiB only
	}
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Clock is a fake clock that tests move; its Now goes where a clock is
// injected (server.Options.Now, server.CollectorOptions.Now).
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock set to at.
func NewClock(at time.Time) *Clock { return &Clock{t: at} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}
