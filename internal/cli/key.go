package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func newKey() *cobra.Command {
	o := &Options{}
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Print the files the key is computed from, their digests, and the key alone on the last line",
		Long: `key shows why two runs got different keys: it prints each matched file with
its sha256, then the final key alone on the last line (or, with --output json,
one JSON line). It takes the same key flags as fetch and upload; --folder
matters, since files in the cached folders never count.`,
		Args: noArgs("source"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Output != "text" && o.Output != "json" {
				return usageError{fmt.Errorf("--output %q: use text or json", o.Output)}
			}
			if o.URI == "" {
				o.URI = o.target
			}
			storeURL, key, hash, err := o.keyAndStore(false)
			if err != nil {
				return usageError{err}
			}
			w := cmd.OutOrStdout()
			if o.Output == "json" {
				out := map[string]any{"key": key, "store": storeName(storeURL), "hash": "", "workdir": "", "patterns": []string{}, "detected": []string{}, "files": []map[string]string{}}
				if hash != nil {
					files := make([]map[string]string, len(hash.Files))
					for i, f := range hash.Files {
						files[i] = map[string]string{"path": f.Path, "digest": f.Digest}
					}
					out["hash"], out["workdir"], out["patterns"], out["files"] = hash.Hash, hash.WorkDir, hash.Patterns, files
					if hash.Detected != nil {
						out["detected"] = hash.Detected
					}
				}
				data, err := json.Marshal(out)
				if err != nil {
					return err
				}
				fmt.Fprintln(w, string(data))
				return nil
			}
			if hash != nil {
				fmt.Fprintf(w, "# working dir: %s\n", hash.WorkDir)
				if len(hash.Detected) > 0 {
					fmt.Fprintf(w, "# detected: %v\n", hash.Detected)
				}
				fmt.Fprintf(w, "# patterns: %q\n", hash.Patterns)
				for _, f := range hash.Files {
					fmt.Fprintf(w, "%s  %s\n", f.Digest, f.Path)
				}
				fmt.Fprintf(w, "# hash: %s\n", hash.Hash)
			}
			if storeURL != "" {
				fmt.Fprintf(w, "# store: %s\n", storeName(storeURL))
			}
			fmt.Fprintln(w, key)
			return nil
		},
	}
	o.addKeyFlags(cmd.Flags())
	cmd.Flags().StringVar(&o.URI, "source", "", "store URI with the key template as its last element (as fetch's --source)")
	cmd.Flags().StringVar(&o.target, "target", "", "same as --source (as upload's --target)")
	cmd.Flags().StringVar(&o.StoreURL, "store", "", "store URL without a key, shown in the output; use with --key")
	cmd.Flags().StringVar(&o.Output, "output", "text", "text, or json: one JSON line with the key, the hash and the files")
	o.addScopeFlags(cmd.Flags(), false)
	bindEnv(cmd, o)
	return cmd
}
