package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// keyOptions are the flags of key: the key flags, and of the store flags
// only the URL (shown, never opened).
type keyOptions struct {
	console
	KeyFlags
	StoreFlags
	target string // --target, an alias of --source
	Output string
}

// keyResult is what key --output json prints.
type keyResult struct {
	Key      string    `result:"key"`
	Store    string    `result:"store"`
	Hash     string    `result:"hash"`
	WorkDir  string    `result:"workdir"`
	Patterns []string  `result:"patterns"`
	Detected []string  `result:"detected"`
	Files    []keyFile `result:"files"`
}

// keyFile is a matched file in keyResult (its fields in JSON's key order).
type keyFile struct {
	Digest string `json:"digest"`
	Path   string `json:"path"`
}

func newKey() *cobra.Command {
	o := &keyOptions{}
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Print the files the key is computed from, their digests, and the key alone on the last line",
		Long: `key shows why two runs got different keys: it prints each matched file with
its sha256, then the final key alone on the last line (or, with --output json,
one JSON line). It takes the same key flags as fetch and upload; --folder
matters, since files in the cached folders never count.`,
		Args: noArgs("source"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if o.URI == "" {
				o.URI = o.target
			}
			k, err := keyAndStore(&o.console, &o.KeyFlags, &o.StoreFlags, false)
			if err != nil {
				return usageError{err}
			}
			if o.Output == "json" {
				return writeKeyJSON(o.stdout, k)
			}
			w := o.stdout
			if hash := k.hash; hash != nil {
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
			if k.storeURL != "" {
				fmt.Fprintf(w, "# store: %s\n", storeName(k.storeURL))
			}
			fmt.Fprintln(w, k.key)
			return nil
		},
	}
	fs := cmd.Flags()
	o.KeyFlags.add(fs)
	fs.StringVar(&o.URI, "source", "", "store URI with the key template as its last element (as fetch's --source)")
	fs.StringVar(&o.target, "target", "", "same as --source (as upload's --target)")
	fs.StringVar(&o.StoreURL, "store", "", "store URL without a key, shown in the output; use with --key")
	fs.StringVar(&o.Output, "output", "text", "text, or json: one JSON line with the key, the hash and the files")
	bindEnv(cmd, &o.console, nil)
	return cmd
}

func writeKeyJSON(w io.Writer, k *keyed) error {
	out := keyResult{Key: k.key, Store: storeName(k.storeURL), Patterns: []string{}, Detected: []string{}, Files: []keyFile{}}
	if hash := k.hash; hash != nil {
		out.Hash, out.WorkDir, out.Patterns = hash.Hash, hash.WorkDir, hash.Patterns
		for _, f := range hash.Files {
			out.Files = append(out.Files, keyFile{Digest: f.Digest, Path: f.Path})
		}
		if hash.Detected != nil {
			out.Detected = hash.Detected
		}
	}
	return printResults(w, out)
}
