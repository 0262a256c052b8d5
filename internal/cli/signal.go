package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Interrupted is the cause of a command's context when SIGTERM (Tekton's
// TaskRun timeout or cancellation) or SIGINT ended it: the command stops
// as on any failure, cleaning up, and exits 128+signal.
type Interrupted struct{ Signal syscall.Signal }

func (i Interrupted) Error() string {
	name := map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT"}[i.Signal]
	if name == "" {
		name = i.Signal.String()
	}
	return "interrupted by " + name
}

// ExitCode is the shell's convention for a process a signal ended.
func (i Interrupted) ExitCode() int { return 128 + int(i.Signal) }

// interruptGrace is how long a command may take to clean up after the
// first signal before the process exits anyway (a second signal exits at
// once). Tekton sends SIGKILL 30 s after SIGTERM.
const interruptGrace = 10 * time.Second

// SignalContext returns a context that SIGTERM or SIGINT cancels with an
// Interrupted cause. After the first signal, a second one, or
// interruptGrace without the command ending, exits the process. stop
// stops listening.
func SignalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		var s os.Signal
		select {
		case s = <-sigs:
		case <-done:
			return
		}
		in := Interrupted{Signal: s.(syscall.Signal)}
		cancel(in)
		select {
		case <-sigs:
			fmt.Fprintf(os.Stderr, "error: %s twice: exiting now\n", in)
		case <-time.After(interruptGrace):
			fmt.Fprintf(os.Stderr, "error: %s: the command did not stop within %s: exiting now\n", in, interruptGrace)
		case <-done:
			return
		}
		os.Exit(in.ExitCode())
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

// interrupted returns the signal that ended ctx, if one did.
func interrupted(ctx context.Context) (Interrupted, bool) {
	var in Interrupted
	if ctx == nil {
		return in, false
	}
	ok := errors.As(context.Cause(ctx), &in)
	return in, ok
}
