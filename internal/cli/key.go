package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newKey() *cobra.Command {
	o := &Options{}
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Print the files the key is computed from, their digests, and the key alone on the last line",
		Long: `key shows why two runs got different keys: it prints each matched file with
its sha256, then the final key alone on the last line. It takes the same key
flags as fetch and upload; --folder matters, since files in the cached
folders never count.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			storeURL, key, hash, err := o.keyAndStore(false)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
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
				fmt.Fprintf(w, "# store: %s\n", storeURL)
			}
			fmt.Fprintln(w, key)
			return nil
		},
	}
	o.addKeyFlags(cmd.Flags())
	cmd.Flags().StringVar(&o.URI, "source", "", "store URI with the key template as its last element (as fetch's --source)")
	cmd.Flags().StringVar(&o.URI, "target", "", "same as --source (as upload's --target)")
	bindEnv(cmd, o)
	return cmd
}
