package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/cachekey"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Statuses a command reports in its status result and JSON line.
const (
	statusHit      = "hit"      // fetch: the exact key was restored
	statusFallback = "fallback" // fetch: a restore key's entry (or part of the exact one) was restored
	statusMiss     = "miss"     // fetch: no usable entry
	statusSaved    = "saved"    // upload: an entry was saved
	statusSkipped  = "skipped"  // upload: nothing to save (the key exists, fetched=true, empty folders)
	statusError    = "error"    // either: a misconfiguration (exit 2) or a store problem (a warning)
)

// outcome is what a command reports: results files and the JSON line.
type outcome map[string]any

// maxResultError bounds the error result file: Tekton keeps every result of
// a step in a 4 KiB termination message.
const maxResultError = 512

// report fills in status, error and seconds, then writes the results files
// and the JSON line.
func (o *Options) report(out outcome, status string, cause error) error {
	out["status"] = status
	out["error"] = ""
	if cause != nil {
		out["error"] = oneLine(cause.Error())
	}
	out["seconds"] = time.Since(o.start).Seconds()
	if o.ResultsDir != "" {
		if err := os.MkdirAll(o.ResultsDir, 0o755); err != nil {
			return fmt.Errorf("writing results: %w", err)
		}
		for k, v := range out {
			var s string
			switch v := v.(type) {
			case map[string]any, []string:
				continue
			case float64:
				s = strconv.FormatFloat(v, 'f', 3, 64)
			case string:
				s = v
				if k == "error" && len(s) > maxResultError {
					s = s[:maxResultError-3] + "..."
				}
			default:
				s = fmt.Sprint(v)
			}
			if err := os.WriteFile(filepath.Join(o.ResultsDir, k), []byte(s), 0o644); err != nil {
				return fmt.Errorf("writing results: %w", err)
			}
		}
	}
	if o.Output == "json" {
		data, err := json.Marshal(out)
		if err != nil {
			return err
		}
		fmt.Fprintln(o.stdout, string(data))
	}
	return nil
}

// ErrStrict is returned when --strict (or --fail-on-miss) turns a miss or a
// cache error into a failure (exit 1).
var ErrStrict = errors.New("strict mode")

// isConfigError tells whether err comes from how the command was set up
// (exit 2), not from the store being unreachable or slow (a warning).
func isConfigError(err error) bool {
	var u usageError
	return errors.As(err, &u) || errors.Is(err, store.ErrBadURL) || errors.Is(err, store.ErrInvalidKey) ||
		errors.Is(err, engine.ErrConfig) || errors.Is(err, cachekey.ErrNoMatch)
}

// fail reports a failed command: a misconfiguration is exit 2 whatever
// --strict says; a store problem is a warning (exit 0) unless --strict.
func (o *Options) fail(out outcome, err error, what string) error {
	if isConfigError(err) {
		if rerr := o.report(out, statusError, err); rerr != nil {
			o.warnf("%v", rerr)
		}
		return usageError{err}
	}
	cause := oneLine(err.Error())
	if in, ok := interrupted(o.ctx); ok {
		// A signal: the command stopped; it is neither a warning nor
		// --strict's failure, and the process exits 128+signal.
		cause = in.Error() + ": " + cause
		if rerr := o.report(out, statusError, errors.New(cause)); rerr != nil {
			o.warnf("%v", rerr)
		}
		return fmt.Errorf("%s: %w", what, errors.New(cause))
	}
	switch {
	case o.idle != nil && o.idle.fired.Load():
		cause = fmt.Sprintf("gave up: the store sent and took nothing for %s (--idle-timeout): %s", o.IdleTimeout, cause)
	case errors.Is(err, context.DeadlineExceeded) && o.Timeout > 0:
		cause = fmt.Sprintf("gave up after %s (--timeout, the TIMEOUT param): %s", o.Timeout, cause)
	}
	if rerr := o.report(out, statusError, errors.New(cause)); rerr != nil {
		o.warnf("%v", rerr)
	}
	msg := what + ": " + cause
	if o.Strict {
		return fmt.Errorf("%w: %s", ErrStrict, msg)
	}
	o.warnf("%s", msg)
	return nil
}

// storeName is the store as results and logs show it: no password, no
// secret query value, no added escaping.
func storeName(storeURL string) string { return store.Redact(storeURL) }

// withStore is err on one line, naming the store unless it already does.
func withStore(err error, storeURL string) error {
	msg := oneLine(err.Error())
	name := storeName(storeURL)
	if strings.Contains(msg, strings.SplitN(name, "?", 2)[0]) {
		return err
	}
	return fmt.Errorf("%s: %w", name, err)
}
