package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/engine"
)

func newUpload() *cobra.Command {
	o := &Options{}
	cmd := &cobra.Command{
		Use:     "upload",
		Aliases: []string{"save"},
		Short:   "Save folders under the key (skipped when a whole entry with these folders exists, unless --force; a store problem warns and exits 0 unless --strict)",
		Example: `  cache upload --target oci://registry:5000/cache/go:go-{{hash}} --pattern '**/go.sum' \
    --folder "$GOCACHE" --folder "$GOMODCACHE"
  cache save --store file:///mnt/cache --key "$(cat results/key)" --folder node_modules`,
		Args: noArgs("target"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return usageError{err}
			}
			return runUpload(cmd.Context(), o)
		},
	}
	o.addKeyFlags(cmd.Flags())
	o.addStoreFlags(cmd.Flags(), "target", "store URI whose last element is the key, as the reference tool's --target: oci://registry/repo:{{hash}}, s3://bucket/prefix/{{hash}}, s3://bucket/cache-go:{{hash}}, file:///dir/{{hash}}")
	cmd.Flags().BoolVar(&o.Force, "force", false, "save even when a whole entry exists under the key")
	o.addScopeFlags(cmd.Flags(), false)
	cmd.Flags().BoolVar(&o.ReadOnly, "read-only", false, "restore-only run (an untrusted pull request): work out the key, write nothing to the store, report status skipped")
	cmd.Flags().StringVar(&o.Fetched, "fetched", "", "the fetch step's fetched result: \"true\" skips the upload (the exact key was restored), unless --force")
	bindEnv(cmd, o)
	return cmd
}

func uploadOutcome() outcome {
	return outcome{
		"key": "", "uploaded": false, "store": "", "reason": "", "replaced": "",
		"bytes": int64(0), "files": 0, "reused-files": 0, "uploaded-bytes": int64(0), "uploaded-blobs": 0,
		"new-packs": 0, "reused-packs": 0,
	}
}

func runUpload(ctx context.Context, o *Options) error {
	out := uploadOutcome()
	if strings.EqualFold(strings.TrimSpace(o.Fetched), "true") && !o.Force {
		out["reason"] = "the exact key was fetched, so the store already has this entry"
		o.infof("upload skipped: %s", out["reason"])
		return o.report(out, statusSkipped, nil)
	}
	storeURL, key, baseKeys, err := o.resolve()
	if err != nil {
		return o.fail(out, usageError{err}, "upload failed")
	}
	out["key"], out["store"] = key, storeName(storeURL)
	if o.ReadOnly {
		out["reason"] = "read-only (--read-only, CACHE_READ_ONLY, the READ_ONLY param): this run never writes the store"
		o.infof("upload skipped: %s", out["reason"])
		return o.report(out, statusSkipped, nil)
	}
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	stopWatch := o.watch(storeURL)
	res, err := func() (*engine.SaveResult, error) {
		st, stop, err := o.openWatched(ctx, storeURL, cancel)
		defer stop()
		if err != nil {
			return nil, err
		}
		return engine.Save(ctx, st, engine.SaveOptions{
			Key: key, Folders: o.Folders, WorkDir: o.WorkDir, BaseKeys: baseKeys, Force: o.Force, Jobs: o.Jobs,
			AnyPlatform: o.CrossPlatform, Tool: "tekton-cache " + version(), Logf: o.infof,
			Inputs: o.inputs, Progress: logProgress(o.infof),
		})
	}()
	stopWatch()
	if err != nil {
		return o.fail(out, withStore(err, storeURL), "upload failed")
	}
	if res.Skipped {
		out["reason"] = res.SkipReason
		o.infof("upload skipped: %s", res.SkipReason)
		return o.report(out, statusSkipped, nil)
	}
	out["uploaded"], out["bytes"], out["replaced"] = true, res.Bytes, res.Replaced
	out["files"], out["reused-files"], out["uploaded-bytes"], out["uploaded-blobs"] = res.Files, res.ReusedFiles, res.UploadedBytes, res.UploadedBlobs
	out["new-packs"], out["reused-packs"] = res.NewPacks, res.ReusedPacks
	out["hashed-files"] = res.HashedFiles
	if err := o.report(out, statusSaved, nil); err != nil {
		o.warnf("%v", err)
	}
	base := "no base entry: every file was read"
	if res.Base != "" {
		base = fmt.Sprintf("%d of %d files unchanged since %s (%d of them read to check), %d read", res.ReusedFiles, res.Files, res.Base, res.HashedFiles, res.Files-res.ReusedFiles)
	}
	share := ""
	if res.Bytes > 0 && res.UploadedBytes <= res.Bytes {
		share = fmt.Sprintf(" (%.0f%% of %s)", 100*float64(res.UploadedBytes)/float64(res.Bytes), humanBytes(res.Bytes))
	}
	o.infof("saved %s to %s: %d files, %s in %.1fs; uploaded %s%s in %d blob(s): %d new pack(s), %d reused; %s",
		key, storeName(storeURL), res.Files, humanBytes(res.Bytes), res.Duration.Seconds(),
		humanBytes(res.UploadedBytes), share, res.UploadedBlobs, res.NewPacks, res.ReusedPacks, base)
	return nil
}
