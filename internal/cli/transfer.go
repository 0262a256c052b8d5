package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// transferOptions are what fetch and upload share: their flag groups, and
// what a run of either keeps.
type transferOptions struct {
	console
	KeyFlags
	StoreFlags
	ReportFlags
	TransferFlags

	idle *idleWatch // the store's --idle-timeout watch, once opened
	keyed
}

// addFlags adds the flag groups; uriFlag is source (fetch) or target
// (upload).
func (o *transferOptions) addFlags(cmd *cobra.Command, uriFlag, uriHelp string) {
	fs := cmd.Flags()
	o.KeyFlags.add(fs)
	o.StoreFlags.add(fs, uriFlag, uriHelp)
	o.ReportFlags.add(fs)
	o.TransferFlags.add(fs)
}

// check checks the flags fetch and upload share, and applies
// --max-index-entries.
func (o *transferOptions) check() error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	if o.MaxIndexEntries <= 0 {
		return usageError{fmt.Errorf("--max-index-entries %d: use a positive number of entries", o.MaxIndexEntries)}
	}
	archive.SetMaxIndexEntries(o.MaxIndexEntries)
	if len(o.Folders) == 0 {
		return usageError{errors.New("no --folder given: pass the directory to cache, e.g. --folder $GOCACHE")}
	}
	return nil
}

// resolve works out the store URL, the key and the restore keys (with
// fallback, fetch's --fallback-scope), and says how the key was made.
// Every error it returns is a misconfiguration.
func (o *transferOptions) resolve(fallback string) (restoreKeys []string, err error) {
	k, err := keyAndStore(&o.console, &o.KeyFlags, &o.StoreFlags, true)
	if err != nil {
		return nil, err
	}
	o.keyed = *k
	var h string
	if k.hash != nil {
		h = k.hash.Hash
		o.infof("key %s from %d file(s) matching %s in %s", k.key, len(k.hash.Files), strings.Join(k.hash.Patterns, ", "), k.hash.WorkDir)
	}
	for _, rk := range o.RestoreKeys {
		rk, err := expandKey(&o.console, rk, h, true)
		if err != nil {
			return nil, fmt.Errorf("--restore-keys: %w", err)
		}
		restoreKeys = append(restoreKeys, rk)
	}
	return o.scopeRestoreKeys(fallback, restoreKeys)
}

// scopeRestoreKeys puts the restore keys in --scope, then, with
// --fallback-scope, adds the key and the restore keys in that scope: a
// pull request's run falls back to main's entries, main's never to a
// pull request's.
func (o *transferOptions) scopeRestoreKeys(fallbackScope string, restoreKeys []string) ([]string, error) {
	fallback, err := scopeName(&o.console, "fallback-scope", fallbackScope)
	switch {
	case err != nil:
		return nil, err
	case fallback != "" && o.scope == "":
		return nil, errors.New("--fallback-scope without --scope: set the scope this run writes to (e.g. --scope pr-42 --fallback-scope main)")
	case o.scope == "":
		return restoreKeys, nil
	}
	unscoped := strings.TrimPrefix(o.key, o.scope+scopeSeparator)
	var out []string
	for _, rk := range restoreKeys {
		out = append(out, withScope(o.scope, rk))
	}
	if fallback != "" && fallback != o.scope {
		out = append(out, withScope(fallback, unscoped))
		for _, rk := range restoreKeys {
			out = append(out, withScope(fallback, rk))
		}
	}
	for _, k := range out {
		if err := store.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("a restore key with its scope: %w", err)
		}
	}
	return out, nil
}

// runWithStore is the part of fetch and upload that talks to the store:
// within --timeout, with --idle-timeout and the still-waiting lines
// watching, it opens the store and runs fn on it. When either fails, it
// reports the failure (fail: a warning unless --strict, exit 2 for a
// misconfiguration) and returns false with what the command returns.
func (o *transferOptions) runWithStore(ctx context.Context, res results, what string, fn func(context.Context, store.Store) error) (bool, error) {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	stopWatch := o.watch()
	err := func() error {
		st, err := openStore(ctx, &o.console, &o.StoreFlags, o.storeURL)
		if err != nil {
			return err
		}
		st, w, stop := watchIdle(st, o.IdleTimeout, cancel)
		defer stop()
		o.idle = w
		return fn(ctx, st)
	}()
	stopWatch()
	if err != nil {
		return false, o.fail(res, withStore(err, o.storeURL), what)
	}
	return true, nil
}

// waitInterval is how long the command may be silent before it says it is
// still waiting for the store.
var waitInterval = 10 * time.Second

// watch prints a line whenever nothing was printed for waitInterval until
// stop is called, so that a store that accepts connections and never
// answers is not silence until --timeout.
func (o *transferOptions) watch() (stop func()) {
	every := waitInterval
	done, exited := make(chan struct{}), make(chan struct{})
	t := time.NewTicker(every / 2)
	o.lastLog.Store(time.Now().UnixNano())
	go func() {
		defer close(exited)
		for {
			select {
			case <-t.C:
				if time.Since(time.Unix(0, o.lastLog.Load())) >= every {
					o.infof("still waiting for %s (%s so far; gives up after --timeout %s)", storeName(o.storeURL), time.Since(o.start).Round(time.Second), o.Timeout)
				}
			case <-done:
				return
			}
		}
	}()
	return func() { t.Stop(); close(done); <-exited }
}
