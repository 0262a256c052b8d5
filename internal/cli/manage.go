package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// manageOptions are the flags of list and delete.
type manageOptions struct {
	console
	StoreFlags
	Output    string
	Prefix    string
	Keys      []string
	OlderThan time.Duration
	DryRun    bool
}

func (m *manageOptions) addFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&m.StoreURL, "store", "", "store URL without a key (file:///dir, oci://registry/repo, s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix)")
	fs.StringVar(&m.BlobQueryParams, "blob-query-params", "", "query parameters appended to the store URL")
	fs.BoolVar(&m.Insecure, "insecure", false, "allow plain HTTP and self-signed TLS certificates for the store")
	fs.StringVar(&m.Prefix, "prefix", "", "only entries whose key starts with this")
	fs.StringVar(&m.Output, "output", "text", "text, or json")
	fs.DurationVar(&m.Timeout, "timeout", 10*time.Minute, "give up after this long")
	m.addStall(fs)
	bindEnv(cmd, &m.console, nil)
}

// open checks the flags and opens the store.
func (m *manageOptions) open(ctx context.Context) (store.Store, string, error) {
	if err := checkOutput(m.Output); err != nil {
		return nil, "", err
	}
	if m.StoreURL == "" {
		return nil, "", usageError{errors.New("no store: pass --store URL, e.g. oci://registry/repo or s3://bucket/prefix")}
	}
	prefix, _, err := store.MapPrefix(m.Prefix)
	if err != nil {
		return nil, "", usageError{fmt.Errorf("--prefix: %w", err)}
	}
	st, err := openStore(ctx, &m.console, &m.StoreFlags, m.withQuery(m.StoreURL))
	if err != nil {
		if isConfigError(err) {
			return nil, "", usageError{err}
		}
		return nil, "", err
	}
	return st, prefix, nil
}

// entries reads the refs whose key starts with prefix, newest first (at
// most store.MaxRestoreCandidates).
func entries(ctx context.Context, st store.Store, prefix string) ([]*store.Ref, error) {
	refs, err := store.NewestFirst(ctx, st, prefix)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return refs, err
}

func storedSize(r *store.Ref) int64 {
	n := r.Index.Size
	for _, p := range r.Packs {
		n += p.Size
	}
	return n
}

// listResult is what list --output json prints.
type listResult struct {
	Store   string      `result:"store"`
	Entries []listEntry `result:"entries"`
}

// listEntry is one entry of listResult.
type listEntry struct {
	Key         string   `result:"key"`
	Created     string   `result:"created"`
	AgeSeconds  int64    `result:"age-seconds"`
	Platform    string   `result:"platform"`
	Tool        string   `result:"tool"`
	StoredBytes int64    `result:"stored-bytes"`
	OwnBytes    int64    `result:"own-bytes"`
	SharedBytes int64    `result:"shared-bytes"`
	Files       int      `result:"files"`
	Bytes       int64    `result:"bytes"`
	Damaged     string   `result:"damaged,omitempty"`
	Packs       int      `result:"packs"`
	Folders     []string `result:"folders"`
}

// MarshalJSON writes the entry as results are written.
func (e listEntry) MarshalJSON() ([]byte, error) { return marshalResults(e) }

// describeEntries gives, per ref of refs, its list line: the bytes of its
// blobs no other entry of all names (own) and those it shares, and from
// its index (read 8 at a time) its file count and content size.
func describeEntries(ctx context.Context, st store.Store, refs, all []*store.Ref) []listEntry {
	uses := map[digest.Digest]int{}
	for _, r := range all {
		for _, d := range r.Blobs() {
			uses[d.Digest]++
		}
	}
	out := make([]listEntry, len(refs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, r := range refs {
		e := listEntry{Key: r.Key, Created: r.Created.UTC().Format(time.RFC3339), AgeSeconds: int64(time.Since(r.Created).Seconds()),
			Platform: r.Platform, Tool: r.Tool, StoredBytes: storedSize(r), Packs: len(r.Packs), Folders: r.Folders}
		for _, d := range r.Blobs() {
			if uses[d.Digest] > 1 {
				e.SharedBytes += d.Size
			} else {
				e.OwnBytes += d.Size
			}
		}
		out[i] = e
		g.Go(func() error {
			en, err := engine.Load(gctx, st, r)
			if err != nil {
				out[i].Damaged = oneLine(err.Error())
				return nil
			}
			out[i].Files, _ = engine.CountFiles(en.Index)
			out[i].Bytes = en.Index.TotalSize()
			return nil
		})
	}
	g.Wait() //nolint:errcheck // each failure is recorded in its entry
	return out
}

// deleteResult is what delete --output json prints.
type deleteResult struct {
	Store   string   `result:"store"`
	Deleted []string `result:"deleted"`
	DryRun  bool     `result:"dry-run"`
}

func newListCmd() *cobra.Command {
	m := &manageOptions{}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the entries of a store, newest first: key, age, platform, files, size, stored bytes (own and shared with other entries), folders",
		Example: `  cache list --store oci://registry:5000/cache/myapp --prefix go-
  cache ls --store s3://ci-cache/go --output json`,
		Args: noArgs("store"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := m.withTimeout(cmd.Context())
			defer cancel()
			st, prefix, err := m.open(ctx)
			if err != nil {
				return err
			}
			all, err := engine.List(ctx, st, "")
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			var refs []*store.Ref
			for _, r := range all {
				if strings.HasPrefix(r.Key, prefix) {
					refs = append(refs, r)
				}
			}
			lines := describeEntries(ctx, st, refs, all)
			w := cmd.OutOrStdout()
			if m.Output == "json" {
				return printResults(w, listResult{Store: storeName(m.StoreURL), Entries: lines})
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tAGE\tPLATFORM\tFILES\tSIZE\tSTORED\tOWN\tSHARED\tFOLDERS")
			for _, e := range lines {
				files, size := fmt.Sprint(e.Files), humanBytes(e.Bytes)
				if e.Damaged != "" {
					files, size = "damaged", "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Key, (time.Duration(e.AgeSeconds) * time.Second).String(), e.Platform, files, size,
					humanBytes(e.StoredBytes), humanBytes(e.OwnBytes), humanBytes(e.SharedBytes), strings.Join(e.Folders, ","))
			}
			fmt.Fprintf(tw, "%d entries, %s stored (shared blobs counted once)\n", len(refs), humanBytes(gc.UniqueBytes(refs)))
			return tw.Flush()
		},
	}
	m.addFlags(cmd)
	return cmd
}

func newDelete() *cobra.Command {
	m := &manageOptions{}
	cmd := &cobra.Command{
		Use:     "delete",
		Aliases: []string{"rm"},
		Short:   "Delete entries (their refs) by key, or by prefix and age; blobs are left to the store's own collection",
		Long: `delete removes entries' refs: --key KEY (repeatable), or every entry whose key
starts with --prefix and, with --older-than, that is older than it. Packs and
indexes stay, since other entries may share them: a registry's garbage
collection removes unreferenced blobs; on file:// and object stores nothing
does yet.`,
		Example: `  cache delete --store oci://registry:5000/cache/myapp --key go-3f1c...
  cache rm --store s3://ci-cache/go --prefix go- --older-than 168h --dry-run`,
		Args: noArgs("store"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(m.Keys) == 0 && m.Prefix == "" && m.OlderThan == 0 {
				return usageError{errors.New("nothing to delete: pass --key KEY, or --prefix P and/or --older-than D")}
			}
			ctx, cancel := m.withTimeout(cmd.Context())
			defer cancel()
			st, prefix, err := m.open(ctx)
			if err != nil {
				return err
			}
			del, ok := store.As[store.Deleter](st)
			if !ok {
				return fmt.Errorf("%s cannot delete entries", st)
			}
			var keys []string
			if len(m.Keys) > 0 {
				for _, k := range m.Keys {
					mk, _, err := store.MapKey(k)
					if err != nil {
						return usageError{err}
					}
					keys = append(keys, mk)
				}
			} else {
				refs, err := entries(ctx, st, prefix)
				if err != nil {
					return err
				}
				for _, r := range refs {
					if m.OlderThan == 0 || time.Since(r.Created) > m.OlderThan {
						keys = append(keys, r.Key)
					}
				}
			}
			w := cmd.OutOrStdout()
			deleted := []string{}
			for _, k := range keys {
				if !m.DryRun {
					if err := del.DeleteRef(ctx, k); err != nil && !errors.Is(err, store.ErrNotFound) {
						return err
					}
				}
				deleted = append(deleted, k)
				if m.Output == "text" {
					verb := "deleted"
					if m.DryRun {
						verb = "would delete"
					}
					fmt.Fprintf(w, "%s %s\n", verb, k)
				}
			}
			if m.Output == "json" {
				return printResults(w, deleteResult{Store: storeName(m.StoreURL), Deleted: deleted, DryRun: m.DryRun})
			}
			return nil
		},
	}
	m.addFlags(cmd)
	cmd.Flags().Var(newList(&m.Keys, false), "key", "key of an entry to delete (repeatable or a comma list)")
	cmd.Flags().Var(ageValue{&m.OlderThan}, "older-than", "only entries older than this (7d, 168h), with or without --prefix")
	cmd.Flags().BoolVar(&m.DryRun, "dry-run", false, "print what would be deleted")
	return cmd
}
