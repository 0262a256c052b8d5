package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/engine"
)

func newFetch() *cobra.Command {
	o := &Options{}
	cmd := &cobra.Command{
		Use:     "fetch",
		Aliases: []string{"restore"},
		Short:   "Restore cached folders (a miss or a store error warns and exits 0 unless --strict)",
		Example: `  cache fetch --source oci://registry:5000/cache/go:go-{{hash}} --pattern '**/go.sum' \
    --folder "$GOCACHE" --folder "$GOMODCACHE" --restore-keys go-
  cache restore --store file:///mnt/cache --key 'npm-{{hash}}' --folder node_modules`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return usageError{err}
			}
			return runFetch(cmd.Context(), o)
		},
	}
	o.addKeyFlags(cmd.Flags())
	o.addStoreFlags(cmd.Flags(), "source", "store URI whose last element is the key, as the reference tool's --source: oci://registry/repo:{{hash}}, s3://bucket/prefix/{{hash}}, file:///dir/{{hash}}")
	bindEnv(cmd, o)
	return cmd
}

func runFetch(ctx context.Context, o *Options) error {
	out := outcome{"fetched": false, "restored": false, "key": "", "matched-key": "", "bytes": int64(0), "seconds": 0.0}
	storeURL, key, restoreKeys, err := o.resolve()
	if err != nil {
		o.report(out) //nolint:errcheck // the key error is the one to show
		return o.failSoft(fmt.Errorf("cache miss: %w", err))
	}
	out["key"] = key
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	res, err := func() (*engine.RestoreResult, error) {
		st, err := openStore(ctx, o, storeURL)
		if err != nil {
			return nil, err
		}
		return engine.Restore(ctx, st, engine.RestoreOptions{Key: key, RestoreKeys: restoreKeys, Folders: o.Folders, Jobs: o.Jobs, Logf: o.infof})
	}()
	if errors.Is(err, engine.ErrConfig) {
		o.report(out)          //nolint:errcheck // the configuration error is the one to show
		return usageError{err} // never transient: exit 2, strict or not
	}
	if err != nil {
		if rerr := o.report(out); rerr != nil {
			o.warnf("%v", rerr)
		}
		return o.failSoft(fmt.Errorf("cache miss: restore failed: %s", withStore(err, storeURL)))
	}
	out["fetched"], out["restored"], out["matched-key"] = res.Fetched, res.Restored, res.MatchedKey
	out["bytes"], out["seconds"] = res.Bytes, res.Duration.Seconds()
	out["files"], out["downloaded"], out["written"] = res.Files, res.Downloaded, res.Written
	out["present"], out["hashed-files"] = res.Present, res.HashedFiles
	if err := o.report(out); err != nil {
		return o.failSoft(err)
	}
	if !res.Restored {
		if o.Strict {
			return fmt.Errorf("%w: cache miss: %s", ErrStrict, res.MissReason)
		}
		o.infof("cache miss: %s; the build runs without a cache", res.MissReason)
		return nil
	}
	how := "exact key"
	if !res.Fetched {
		how = "restore key fallback for " + key
	}
	o.infof("cache hit: restored %s (%s) into %s: %d files, %s in %.1fs (downloaded %s, wrote %s, %d files already in place, %d of them read to check)",
		res.MatchedKey, how, strings.Join(o.Folders, ", "), res.Files, engine.HumanBytes(res.Bytes), res.Duration.Seconds(),
		engine.HumanBytes(res.Downloaded), engine.HumanBytes(res.Written), res.Present, res.HashedFiles)
	return nil
}
