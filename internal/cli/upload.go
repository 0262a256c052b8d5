package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// uploadOptions are the flags of upload.
type uploadOptions struct {
	transferOptions
	Force    bool
	Fetched  string
	ReadOnly bool
}

func newUpload() *cobra.Command {
	o := &uploadOptions{}
	cmd := &cobra.Command{
		Use:     "upload",
		Aliases: []string{"save"},
		Short:   "Save folders under the key (skipped when a whole entry with these folders exists, unless --force; a store problem warns and exits 0 unless --strict)",
		Example: `  cache upload --target oci://registry:5000/cache/go:go-{{hash}} --pattern '**/go.sum' \
    --folder "$GOCACHE" --folder "$GOMODCACHE"
  cache save --store file:///mnt/cache --key "$(cat results/key)" --folder node_modules`,
		Args: noArgs("target"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			return runUpload(cmd.Context(), o)
		},
	}
	o.addFlags(cmd, "target", "store URI whose last element is the key, as the reference tool's --target: oci://registry/repo:{{hash}}, s3://bucket/prefix/{{hash}}, s3://bucket/cache-go:{{hash}}, file:///dir/{{hash}}")
	fs := cmd.Flags()
	fs.BoolVar(&o.Force, "force", false, "save even when a whole entry exists under the key")
	fs.BoolVar(&o.ReadOnly, "read-only", false, "restore-only run (an untrusted pull request): work out the key, write nothing to the store, report status skipped")
	fs.StringVar(&o.Fetched, "fetched", "", "the fetch step's fetched result: \"true\" skips the upload (the exact key was restored), unless --force")
	bindEnv(cmd, &o.console, &o.Quiet)
	return cmd
}

func runUpload(ctx context.Context, o *uploadOptions) error {
	out := &uploadResult{}
	if strings.EqualFold(strings.TrimSpace(o.Fetched), "true") && !o.Force {
		out.Reason = "the exact key was fetched, so the store already has this entry"
		o.infof("upload skipped: %s", out.Reason)
		return o.report(out, statusSkipped, nil)
	}
	baseKeys, err := o.resolve("")
	if err != nil {
		return o.fail(out, usageError{err}, "upload failed")
	}
	out.Key, out.Store = o.key, storeName(o.storeURL)
	if o.ReadOnly {
		out.Reason = "read-only (--read-only, CACHE_READ_ONLY, the READ_ONLY param): this run never writes the store"
		o.infof("upload skipped: %s", out.Reason)
		return o.report(out, statusSkipped, nil)
	}
	var res *engine.SaveResult
	if ok, err := o.runWithStore(ctx, out, "upload failed", func(ctx context.Context, st store.Store) (err error) {
		res, err = engine.Save(ctx, st, engine.SaveOptions{
			Key: o.key, Folders: o.Folders, WorkDir: o.WorkDir, BaseKeys: baseKeys, Force: o.Force, Jobs: o.Jobs,
			AnyPlatform: o.CrossPlatform, Tool: "tekton-cache " + version(), Logf: o.infof,
			Inputs: o.inputs, Progress: logProgress(o.infof),
		})
		return err
	}); !ok {
		return err
	}
	if res.Skipped {
		out.Reason = res.SkipReason
		o.infof("upload skipped: %s", res.SkipReason)
		return o.report(out, statusSkipped, nil)
	}
	out.Uploaded, out.Bytes, out.Replaced = true, res.Bytes, res.Replaced
	out.Files, out.ReusedFiles, out.UploadedBytes, out.UploadedBlobs = res.Files, res.ReusedFiles, res.UploadedBytes, res.UploadedBlobs
	out.NewPacks, out.ReusedPacks = res.NewPacks, res.ReusedPacks
	out.HashedFiles = &res.HashedFiles
	if err := o.report(out, statusSaved, nil); err != nil {
		o.warnf("%v", err)
	}
	base := "no base entry: every file was read"
	if res.Base != "" {
		base = fmt.Sprintf("%d of %d files unchanged since %s (%d of them read to check), %d read", res.ReusedFiles, res.Files, res.Base, res.HashedFiles, res.Files-res.ReusedFiles-res.EmptyFiles)
		if res.EmptyFiles > 0 {
			base += fmt.Sprintf(", %d empty", res.EmptyFiles)
		}
	}
	share := ""
	if res.Bytes > 0 && res.UploadedBytes <= res.Bytes {
		share = fmt.Sprintf(" (%.0f%% of %s)", 100*float64(res.UploadedBytes)/float64(res.Bytes), humanBytes(res.Bytes))
	}
	o.infof("saved %s to %s: %d files, %s in %.1fs; uploaded %s%s in %d blob(s): %d new pack(s), %d reused; %s",
		o.key, storeName(o.storeURL), res.Files, humanBytes(res.Bytes), res.Duration.Seconds(),
		humanBytes(res.UploadedBytes), share, res.UploadedBlobs, res.NewPacks, res.ReusedPacks, base)
	return nil
}
