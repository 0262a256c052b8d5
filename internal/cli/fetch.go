package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/engine"
)

func newFetch() *cobra.Command {
	o := &Options{}
	cmd := &cobra.Command{
		Use:     "fetch",
		Aliases: []string{"restore"},
		Short:   "Restore cached folders (a miss or a store problem warns and exits 0 unless --strict; a misconfiguration exits 2)",
		Example: `  cache fetch --source oci://registry:5000/cache/go:go-{{hash}} --pattern '**/go.sum' \
    --folder "$GOCACHE" --folder "$GOMODCACHE" --restore-keys go-
  cache restore --store file:///mnt/cache --key 'npm-{{os}}-{{arch}}-{{hash}}' --folder node_modules`,
		Args: noArgs("source"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return usageError{err}
			}
			return runFetch(cmd.Context(), o)
		},
	}
	o.addKeyFlags(cmd.Flags())
	o.addStoreFlags(cmd.Flags(), "source", "store URI whose last element is the key, as the reference tool's --source: oci://registry/repo:{{hash}}, s3://bucket/prefix/{{hash}}, s3://bucket/cache-go:{{hash}}, file:///dir/{{hash}}")
	o.addScopeFlags(cmd.Flags(), true)
	cmd.Flags().BoolVar(&o.LookupOnly, "lookup-only", false, "say whether a usable entry exists (status, fetched, matched-key) without restoring it")
	cmd.Flags().BoolVar(&o.FailOnMiss, "fail-on-miss", false, "exit 1 when no entry was restored (a restore-key fallback is not a miss); store problems stay warnings")
	bindEnv(cmd, o)
	return cmd
}

func fetchOutcome() outcome {
	return outcome{
		"fetched": false, "restored": false, "key": "", "matched-key": "", "restore-key": "", "store": "",
		"bytes": int64(0), "files": 0, "downloaded": int64(0), "written": int64(0), "present": 0,
		"age-seconds": int64(0), "created": "", "platform": "", "reason": "",
	}
}

func runFetch(ctx context.Context, o *Options) error {
	out := fetchOutcome()
	storeURL, key, restoreKeys, err := o.resolve()
	if err != nil {
		return o.fail(out, usageError{err}, "cache error")
	}
	out["key"], out["store"] = key, storeName(storeURL)
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	stopWatch := o.watch(storeURL)
	res, err := func() (*engine.RestoreResult, error) {
		st, stop, err := o.openWatched(ctx, storeURL, cancel)
		defer stop()
		if err != nil {
			return nil, err
		}
		return engine.Restore(ctx, st, engine.RestoreOptions{
			Key: key, RestoreKeys: restoreKeys, Folders: o.Folders, WorkDir: o.WorkDir, Jobs: o.Jobs, Logf: o.infof, Progress: logProgress(o.infof),
			AnyPlatform: o.CrossPlatform, LookupOnly: o.LookupOnly,
		})
	}()
	stopWatch()
	if err != nil {
		return o.fail(out, withStore(err, storeURL), "cache error: restore failed (the build runs without a cache)")
	}
	out["fetched"], out["restored"], out["matched-key"], out["restore-key"] = res.Fetched, res.Restored, res.MatchedKey, res.RestoreKey
	out["bytes"], out["files"], out["downloaded"], out["written"], out["present"] = res.Bytes, res.Files, res.Downloaded, res.Written, res.Present
	out["platform"], out["hashed-files"] = res.Platform, res.HashedFiles
	if !res.Created.IsZero() {
		out["created"] = res.Created.UTC().Format(time.RFC3339)
		out["age-seconds"] = int64(time.Since(res.Created).Seconds())
	}
	status := statusMiss
	switch {
	case res.Found && res.Fetched:
		status = statusHit
	case res.Found:
		status = statusFallback
	default:
		out["reason"] = res.MissReason
		if line := o.diagnoseMiss(ctx, storeURL, key); line != "" {
			out["diagnosis"] = line
			res.MissReason += "; " + line
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
		how = fmt.Sprintf("restore key %q; no usable entry for %s", res.RestoreKey, key)
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
