package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

func newUpload() *cobra.Command {
	o := &Options{}
	cmd := &cobra.Command{
		Use:     "upload",
		Aliases: []string{"save"},
		Short:   "Save folders under the key (skipped when the key exists, unless --force; a failure warns and exits 0 unless --strict)",
		Example: `  cache upload --target oci://registry:5000/cache/go:go-{{hash}} --pattern '**/go.sum' \
    --folder "$GOCACHE" --folder "$GOMODCACHE"
  cache save --store file:///mnt/cache --key "$(cat results/key)" --folder node_modules`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return usageError{err}
			}
			return runUpload(cmd.Context(), o)
		},
	}
	o.addKeyFlags(cmd.Flags())
	o.addStoreFlags(cmd.Flags(), "target", "store URI whose last element is the key, as the reference tool's --target: oci://registry/repo:{{hash}}, s3://bucket/prefix/{{hash}}, file:///dir/{{hash}}")
	cmd.Flags().BoolVar(&o.Force, "force", false, "save even when the key already exists")
	cmd.Flags().StringVar(&o.Fetched, "fetched", "", "the fetch step's fetched result: \"true\" skips the upload (the exact key was restored), unless --force")
	bindEnv(cmd, o)
	return cmd
}

func runUpload(ctx context.Context, o *Options) error {
	out := outcome{"key": "", "uploaded": false, "bytes": int64(0), "seconds": 0.0}
	if strings.EqualFold(strings.TrimSpace(o.Fetched), "true") && !o.Force {
		o.infof("upload skipped: the exact key was fetched, so the store already has this entry")
		return o.report(out)
	}
	storeURL, key, baseKeys, err := o.resolve()
	if err != nil {
		o.report(out) //nolint:errcheck // the key error is the one to show
		return o.failSoft(fmt.Errorf("upload skipped: %w", err))
	}
	out["key"] = key
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	res, err := func() (*engine.SaveResult, error) {
		st, err := openStore(ctx, o, storeURL)
		if err != nil {
			return nil, err
		}
		return engine.Save(ctx, st, engine.SaveOptions{Key: key, Folders: o.Folders, BaseKeys: baseKeys, Force: o.Force, Jobs: o.Jobs, Tool: "tekton-cache " + version(), Logf: o.infof})
	}()
	if errors.Is(err, engine.ErrConfig) {
		o.report(out)          //nolint:errcheck // the configuration error is the one to show
		return usageError{err} // never transient: exit 2, strict or not
	}
	if err != nil {
		if rerr := o.report(out); rerr != nil {
			o.warnf("%v", rerr)
		}
		return o.failSoft(fmt.Errorf("upload failed: %s", withStore(err, storeURL)))
	}
	out["seconds"] = res.Duration.Seconds()
	if res.Skipped {
		o.infof("upload skipped: %s", res.SkipReason)
		return o.report(out)
	}
	out["uploaded"], out["bytes"] = true, res.Bytes
	out["files"], out["uploaded-bytes"], out["uploaded-blobs"] = res.Files, res.UploadedBytes, res.UploadedBlobs
	out["new-packs"], out["reused-packs"] = res.NewPacks, res.ReusedPacks
	out["reused-files"], out["hashed-files"] = res.ReusedFiles, res.HashedFiles
	if err := o.report(out); err != nil {
		return o.failSoft(err)
	}
	base := "no base entry: every file was read"
	if res.Base != "" {
		base = fmt.Sprintf("base %s: %d files unchanged, %d of them read to check", res.Base, res.ReusedFiles, res.HashedFiles)
	}
	o.infof("saved %s to %s: %d files, %s in %.1fs; sent %d blob(s), %s (%d new pack(s), %d reused; %s)",
		key, store.Redact(storeURL), res.Files, engine.HumanBytes(res.Bytes), res.Duration.Seconds(),
		res.UploadedBlobs, engine.HumanBytes(res.UploadedBytes), res.NewPacks, res.ReusedPacks, base)
	return nil
}
