package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// loadEntry reads the entry under key (mapped as fetch and upload map it).
func loadEntry(ctx context.Context, st store.Store, key string) (*engine.Entry, error) {
	mk, _, err := store.MapKey(key)
	if err != nil {
		return nil, usageError{err}
	}
	ref, err := st.GetRef(ctx, mk)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no entry %q in %s: `cache list --store ...` shows the keys", key, st)
	}
	if err != nil {
		return nil, err
	}
	return engine.Load(ctx, st, ref)
}

// loadEntries opens the store of m's flags and reads the entries of keys.
func (m *manageOptions) loadEntries(ctx context.Context, keys ...string) ([]*engine.Entry, error) {
	st, _, err := m.open(ctx)
	if err != nil {
		return nil, err
	}
	entries := make([]*engine.Entry, len(keys))
	for i, k := range keys {
		if entries[i], err = loadEntry(ctx, st, k); err != nil {
			return nil, err
		}
	}
	return entries, nil
}

// entryPath is an entry's path as inspect and diff print it: prefixed by
// its folder's name when the entry holds several.
func entryPath(x *archive.Index, e *archive.Entry) string {
	p := e.Path
	if len(x.Roots) > 1 {
		p = x.Roots[e.Root] + "/" + p
	}
	if e.Type == archive.TypeDir {
		p += "/"
	}
	return p
}

// sized is a path and its bytes, for inspect's largest files and
// directories.
type sized struct {
	Path  string `result:"path"`
	Bytes int64  `result:"bytes"`
	Files int    `result:"files,omitempty"`
}

// MarshalJSON writes the line as results are written.
func (s sized) MarshalJSON() ([]byte, error) { return marshalResults(s) }

// packLine is one pack of inspect.
type packLine struct {
	Digest       string `result:"digest"`
	StoredBytes  int64  `result:"stored-bytes"`
	Files        int    `result:"files"`
	ContentBytes int64  `result:"content-bytes"`
}

// MarshalJSON writes the line as results are written.
func (p packLine) MarshalJSON() ([]byte, error) { return marshalResults(p) }

// inspectResult is what inspect prints.
type inspectResult struct {
	Key          string     `result:"key"`
	Created      string     `result:"created"`
	Platform     string     `result:"platform"`
	Tool         string     `result:"tool"`
	Folders      []string   `result:"folders"`
	Files        int        `result:"files"`
	EmptyFiles   int        `result:"empty-files"`
	Dirs         int        `result:"dirs"`
	Symlinks     int        `result:"symlinks"`
	ContentBytes int64      `result:"content-bytes"`
	StoredBytes  int64      `result:"stored-bytes"`
	IndexBytes   int64      `result:"index-bytes"`
	Packs        []packLine `result:"packs"`
	LargestFiles []sized    `result:"largest-files"`
	LargestDirs  []sized    `result:"largest-dirs"`
}

// describeEntry sums up an entry, with its top largest files and
// directories (a directory counts everything under it).
func describeEntry(e *engine.Entry, top int) inspectResult {
	x, r := e.Index, e.Ref
	out := inspectResult{Key: r.Key, Created: r.Created.UTC().Format(time.RFC3339), Platform: r.Platform, Tool: r.Tool, Folders: r.Folders,
		StoredBytes: storedSize(r), IndexBytes: r.Index.Size, Packs: make([]packLine, len(x.Packs)), LargestFiles: []sized{}, LargestDirs: []sized{}}
	if len(out.Folders) == 0 {
		out.Folders = x.Roots
	}
	for i, p := range x.Packs {
		out.Packs[i] = packLine{Digest: string(p.Digest), StoredBytes: p.Size}
	}
	dirs := map[string]*sized{}
	var files []sized
	for i := range x.Entries {
		en := &x.Entries[i]
		switch en.Type {
		case archive.TypeDir:
			out.Dirs++
			continue
		case archive.TypeSymlink:
			out.Symlinks++
			continue
		}
		out.Files++
		if en.Size == 0 {
			out.EmptyFiles++
		}
		out.ContentBytes += en.Size
		if en.Pack >= 0 && en.Pack < len(out.Packs) {
			out.Packs[en.Pack].Files++
			out.Packs[en.Pack].ContentBytes += en.Size
		}
		p := entryPath(x, en)
		files = append(files, sized{Path: p, Bytes: en.Size})
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			s := dirs[d]
			if s == nil {
				s = &sized{Path: d}
				dirs[d] = s
			}
			s.Bytes += en.Size
			s.Files++
		}
	}
	bySize := func(a, b sized) int { return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.Path, b.Path)) }
	slices.SortFunc(files, bySize)
	out.LargestFiles = append(out.LargestFiles, files[:min(top, len(files))]...)
	var ds []sized
	for _, s := range dirs {
		ds = append(ds, *s)
	}
	slices.SortFunc(ds, bySize)
	out.LargestDirs = append(out.LargestDirs, ds[:min(top, len(ds))]...)
	return out
}

func (r inspectResult) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "key:\t%s\n", r.Key)
	fmt.Fprintf(tw, "created:\t%s (%s ago)\n", r.Created, ageOf(r.Created))
	fmt.Fprintf(tw, "platform:\t%s\ntool:\t%s\n", r.Platform, r.Tool)
	fmt.Fprintf(tw, "folders:\t%v\n", r.Folders)
	fmt.Fprintf(tw, "content:\t%d files (%d empty), %d directories, %d symlinks: %s\n", r.Files, r.EmptyFiles, r.Dirs, r.Symlinks, humanBytes(r.ContentBytes))
	fmt.Fprintf(tw, "stored:\t%s in %d packs and a %s index\n", humanBytes(r.StoredBytes), len(r.Packs), humanBytes(r.IndexBytes))
	tw.Flush()
	fmt.Fprintln(w, "\npacks:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, p := range r.Packs {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d files\t%s of content\n", i, p.Digest[:min(len(p.Digest), 19)], humanBytes(p.StoredBytes), p.Files, humanBytes(p.ContentBytes))
	}
	tw.Flush()
	for _, part := range []struct {
		title string
		lines []sized
	}{{"largest files", r.LargestFiles}, {"largest directories", r.LargestDirs}} {
		fmt.Fprintf(w, "\n%s:\n", part.title)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, s := range part.lines {
			if s.Files > 0 {
				fmt.Fprintf(tw, "  %s\t%d files\t%s\n", humanBytes(s.Bytes), s.Files, s.Path)
			} else {
				fmt.Fprintf(tw, "  %s\t%s\n", humanBytes(s.Bytes), s.Path)
			}
		}
		tw.Flush()
	}
	return nil
}

func ageOf(rfc3339 string) time.Duration {
	t, err := time.Parse(time.RFC3339, rfc3339)
	if err != nil {
		return 0
	}
	return time.Since(t).Round(time.Second)
}

func newInspect() *cobra.Command {
	m := &manageOptions{}
	var top int
	cmd := &cobra.Command{
		Use:   "inspect KEY",
		Short: "Show what an entry holds: folders, packs, largest files and directories",
		Example: `  cache inspect --store oci://registry:5000/cache/app go-3f1c...
  cache inspect --store s3://ci-cache/go go-3f1c... --top 20 --output json`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := m.withTimeout(cmd.Context())
			defer cancel()
			es, err := m.loadEntries(ctx, args[0])
			if err != nil {
				return err
			}
			r := describeEntry(es[0], top)
			if m.Output == "json" {
				return printResults(cmd.OutOrStdout(), r)
			}
			return r.print(cmd.OutOrStdout())
		},
	}
	m.addFlags(cmd)
	cmd.Flags().IntVar(&top, "top", 10, "how many of the largest files and directories to show")
	return cmd
}

// diffResult is what diff prints.
type diffResult struct {
	From    string   `result:"from"`
	To      string   `result:"to"`
	Added   []string `result:"added"`
	Removed []string `result:"removed"`
	Changed []string `result:"changed"`
	// AddedBytes and ChangedBytes are the content sizes in To.
	AddedBytes   int64 `result:"added-bytes"`
	RemovedBytes int64 `result:"removed-bytes"`
	ChangedBytes int64 `result:"changed-bytes"`
	// DownloadBytes is what a restore of To over a tree holding From
	// fetches: the index and the packs of To holding a file that differs.
	DownloadBytes int64 `result:"download-bytes"`
	DownloadPacks int   `result:"download-packs"`
	Packs         int   `result:"packs"`
}

// diffEntries compares two entries path by path (by folder position and
// path): content, type, mode and link target.
func diffEntries(a, b *engine.Entry) diffResult {
	type id struct {
		root int
		path string
	}
	old := map[id]*archive.Entry{}
	for i := range a.Index.Entries {
		e := &a.Index.Entries[i]
		old[id{e.Root, e.Path}] = e
	}
	out := diffResult{From: a.Ref.Key, To: b.Ref.Key, Added: []string{}, Removed: []string{}, Changed: []string{}, Packs: len(b.Index.Packs), DownloadBytes: b.Ref.Index.Size}
	fetch := make([]bool, len(b.Index.Packs))
	for i := range b.Index.Entries {
		e := &b.Index.Entries[i]
		k := id{e.Root, e.Path}
		o, ok := old[k]
		delete(old, k)
		same := ok && o.Type == e.Type && o.Digest == e.Digest && o.Size == e.Size && o.Link == e.Link && o.Mode == e.Mode
		switch {
		case !ok:
			out.Added = append(out.Added, entryPath(b.Index, e))
			out.AddedBytes += e.Size
		case !same:
			out.Changed = append(out.Changed, entryPath(b.Index, e))
			out.ChangedBytes += e.Size
		}
		// A file whose bytes are not already there comes from its pack.
		if e.Pack >= 0 && e.Pack < len(fetch) && !(ok && o.Type == e.Type && o.Digest == e.Digest && o.Size == e.Size) {
			fetch[e.Pack] = true
		}
	}
	for _, o := range old {
		out.Removed = append(out.Removed, entryPath(a.Index, o))
		out.RemovedBytes += o.Size
	}
	slices.Sort(out.Removed)
	for i, f := range fetch {
		if f {
			out.DownloadPacks++
			out.DownloadBytes += b.Index.Packs[i].Size
		}
	}
	return out
}

func (d diffResult) print(w io.Writer, limit int) {
	for _, part := range []struct {
		mark  string
		paths []string
	}{{"+", d.Added}, {"-", d.Removed}, {"~", d.Changed}} {
		for i, p := range part.paths {
			if limit > 0 && i == limit {
				fmt.Fprintf(w, "%s ... and %d more\n", part.mark, len(part.paths)-limit)
				break
			}
			fmt.Fprintf(w, "%s %s\n", part.mark, p)
		}
	}
	fmt.Fprintf(w, "%s -> %s: %d added (%s), %d removed (%s), %d changed (%s now)\n", d.From, d.To,
		len(d.Added), humanBytes(d.AddedBytes), len(d.Removed), humanBytes(d.RemovedBytes), len(d.Changed), humanBytes(d.ChangedBytes))
	fmt.Fprintf(w, "a restore of %s over %s downloads %s: %d of its %d packs and its index\n", d.To, d.From, humanBytes(d.DownloadBytes), d.DownloadPacks, d.Packs)
}

func newDiff() *cobra.Command {
	m := &manageOptions{}
	var limit int
	cmd := &cobra.Command{
		Use:   "diff KEY1 KEY2",
		Short: "Show what files differ between two entries and what a restore of KEY2 over KEY1 would download",
		Example: `  cache diff --store s3://ci-cache/go go-3f1c... go-9a02...
  cache diff --store oci://registry:5000/cache/app go-old go-new --output json`,
		Args: exactArgs(2, "KEY1 KEY2"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := m.withTimeout(cmd.Context())
			defer cancel()
			es, err := m.loadEntries(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			d := diffEntries(es[0], es[1])
			if m.Output == "json" {
				return printResults(cmd.OutOrStdout(), d)
			}
			d.print(cmd.OutOrStdout(), limit)
			return nil
		},
	}
	m.addFlags(cmd)
	cmd.Flags().IntVar(&limit, "limit", 50, "show at most this many paths of each kind (0: all)")
	return cmd
}
