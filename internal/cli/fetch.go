package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// fetchOptions are the flags of fetch.
type fetchOptions struct {
	transferOptions
	FallbackScope string // --fallback-scope: restore from this scope's entries after Scope's
	LookupOnly    bool
	FailOnMiss    bool
}

func newFetch() *cobra.Command {
	o := &fetchOptions{}
	cmd := &cobra.Command{
		Use:     "fetch",
		Aliases: []string{"restore"},
		Short:   "Restore cached folders (a miss or a store problem warns and exits 0 unless --strict; a misconfiguration exits 2)",
		Example: `  cache fetch --source oci://registry:5000/cache/go:go-{{hash}} --pattern '**/go.sum' \
    --folder "$GOCACHE" --folder "$GOMODCACHE" --restore-keys go-
  cache restore --store file:///mnt/cache --key 'npm-{{os}}-{{arch}}-{{hash}}' --folder node_modules`,
		Args: noArgs("source"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			return runFetch(cmd.Context(), o)
		},
	}
	o.addFlags(cmd, "source", "store URI whose last element is the key, as the reference tool's --source: oci://registry/repo:{{hash}}, s3://bucket/prefix/{{hash}}, s3://bucket/cache-go:{{hash}}, file:///dir/{{hash}}")
	fs := cmd.Flags()
	fs.StringVar(&o.FallbackScope, "fallback-scope", "", "after --scope's own entries, restore from this scope's (the exact key, then the restore keys), e.g. main for a pull request; never the other way")
	fs.BoolVar(&o.LookupOnly, "lookup-only", false, "say whether a usable entry exists (status, fetched, matched-key) without restoring it")
	fs.BoolVar(&o.FailOnMiss, "fail-on-miss", false, "exit 1 when no entry was restored (a restore-key fallback is not a miss); store problems stay warnings")
	bindEnv(cmd, &o.console, &o.Quiet)
	return cmd
}

func runFetch(ctx context.Context, o *fetchOptions) error {
	out := &fetchResult{}
	restoreKeys, err := o.resolve(o.FallbackScope)
	if err != nil {
		return o.fail(out, usageError{err}, "cache error")
	}
	out.Key, out.Store = o.key, storeName(o.storeURL)
	var res *engine.RestoreResult
	if ok, err := o.runWithStore(ctx, out, "cache error: restore failed (the build runs without a cache)", func(ctx context.Context, st store.Store) (err error) {
		res, err = engine.Restore(ctx, st, engine.RestoreOptions{
			Key: o.key, RestoreKeys: restoreKeys, Folders: o.Folders, WorkDir: o.WorkDir, Jobs: o.Jobs, Logf: o.infof, Progress: logProgress(o.infof),
			AnyPlatform: o.CrossPlatform, LookupOnly: o.LookupOnly,
		})
		if err == nil && !res.Found {
			out.Diagnosis = o.diagnoseMiss(ctx)
		}
		return err
	}); !ok {
		return err
	}
	out.Fetched, out.Restored, out.MatchedKey, out.RestoreKey = res.Fetched, res.Restored, res.MatchedKey, res.RestoreKey
	out.Bytes, out.Files, out.Downloaded, out.Written, out.Present = res.Bytes, res.Files, res.Downloaded, res.Written, res.Present
	out.Platform, out.HashedFiles = res.Platform, &res.HashedFiles
	if !res.Created.IsZero() {
		out.Created = res.Created.UTC().Format(time.RFC3339)
		out.AgeSeconds = int64(time.Since(res.Created).Seconds())
	}
	status := statusMiss
	switch {
	case res.Found && res.Fetched:
		status = statusHit
	case res.Found:
		status = statusFallback
	default:
		out.Reason = res.MissReason
		if out.Diagnosis != "" {
			res.MissReason += "; " + out.Diagnosis
		}
	}
	if err := o.report(out, status, nil); err != nil {
		o.warnf("%v", err)
	}
	if status == statusMiss {
		if o.Strict || o.FailOnMiss {
			return fmt.Errorf("%w: cache miss: %s", ErrStrict, res.MissReason)
		}
		o.infof("cache miss: %s; the build runs without a cache", res.MissReason)
		return nil
	}
	how := "exact key"
	if res.RestoreKey != "" {
		how = fmt.Sprintf("restore key %q; no usable entry for %s", res.RestoreKey, o.key)
	} else if !res.Fetched {
		how = fmt.Sprintf("exact key, but it lacks folder(s) %s", strings.Join(res.Extra, ", "))
	}
	age := ""
	if !res.Created.IsZero() {
		age = fmt.Sprintf("; saved %s ago on %s", time.Since(res.Created).Round(time.Second), res.Platform)
	}
	if o.LookupOnly {
		o.infof("cache %s: entry %s exists (%s%s); nothing restored (--lookup-only)", status, res.MatchedKey, how, age)
		return nil
	}
	o.infof("cache %s: restored %s (%s%s) into %s: %d files, %s in %.1fs (downloaded %s, wrote %s; %d files already in place, %d of them read to check, %d empty)",
		status, res.MatchedKey, how, age, strings.Join(o.Folders, ", "), res.Files, humanBytes(res.Bytes), res.Duration.Seconds(),
		humanBytes(res.Downloaded), humanBytes(res.Written), res.Present, res.HashedFiles, res.Empty)
	return nil
}
