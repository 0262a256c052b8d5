package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/cachekey"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/humanize"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// keyInputs records what a key was made from (nil when no file was hashed).
// The template is the URI's key element when the key itself was given
// whole (KEY from the fetch step), so that entries keep their prefix.
func keyInputs(template, uri string, hash *cachekey.Result) *store.KeyInputs {
	if hash == nil {
		return nil
	}
	if !cachekey.HasHash(template) && uri != "" {
		if _, k, err := store.SplitKey(uri); err == nil && cachekey.HasHash(k) {
			template = k
		}
	}
	in := &store.KeyInputs{Template: template, Patterns: hash.Patterns}
	for i, f := range hash.Files {
		if i == store.MaxInputFiles {
			in.Truncated = true
			break
		}
		in.Files = append(in.Files, store.InputFile{Path: f.Path, Digest: f.Digest})
	}
	return in
}

// keyPrefix is the part of a key template before its first placeholder,
// mapped as keys are: the prefix that entries of the same cache share.
func keyPrefix(template string) string {
	p := template
	if i := strings.Index(p, "{{"); i >= 0 {
		p = p[:i]
	}
	if m, _, err := store.MapPrefix(p); err == nil {
		return m
	}
	return ""
}

// entryDiff is how one stored entry differs from the inputs at hand.
type entryDiff struct {
	Key      string    `json:"key"`
	Created  time.Time `json:"created"`
	Platform string    `json:"platform,omitempty"`
	// Recorded is false for entries saved without their key inputs.
	Recorded bool     `json:"recorded"`
	Changed  []string `json:"changed,omitempty"`
	Added    []string `json:"added,omitempty"`   // here, not in the entry
	Removed  []string `json:"removed,omitempty"` // in the entry, not here
	// OtherPlatform is set when the entry was saved on another platform.
	OtherPlatform bool   `json:"other_platform,omitempty"`
	Template      string `json:"template,omitempty"`
	Same          bool   `json:"same"`
}

func (d *entryDiff) distance() int {
	if !d.Recorded {
		return 1 << 20
	}
	n := len(d.Changed) + len(d.Added) + len(d.Removed)
	if d.OtherPlatform {
		n += 1000
	}
	return n
}

// summary is the one-line version: "go.sum changed, docs/go.mod added".
func (d *entryDiff) summary() string {
	var parts []string
	if d.OtherPlatform {
		parts = append(parts, fmt.Sprintf("saved on %s, this is %s", d.Platform, engine.Platform()))
	}
	if !d.Recorded {
		parts = append(parts, "it records no key inputs (saved by an older version, or under a key given whole)")
	}
	list := func(names []string, what string) {
		const most = 3
		for i, n := range names {
			if i == most {
				parts = append(parts, fmt.Sprintf("%d more %s", len(names)-most, what))
				break
			}
			parts = append(parts, n+" "+what)
		}
	}
	list(d.Changed, "changed")
	list(d.Added, "added")
	list(d.Removed, "removed")
	if len(parts) == 0 && d.Recorded {
		parts = append(parts, "the same files and contents (the key template differs?)")
	}
	return strings.Join(parts, ", ")
}

func compareInputs(r *store.Ref, cur *store.KeyInputs, platform string) *entryDiff {
	d := &entryDiff{Key: r.Key, Created: r.Created, Platform: r.Platform, Recorded: r.Inputs != nil}
	d.OtherPlatform = r.Platform != "" && platform != "" && r.Platform != platform
	if r.Inputs == nil || cur == nil {
		return d
	}
	d.Template = r.Inputs.Template
	had := map[string]string{}
	for _, f := range r.Inputs.Files {
		had[f.Path] = f.Digest
	}
	for _, f := range cur.Files {
		old, ok := had[f.Path]
		switch {
		case !ok:
			d.Added = append(d.Added, f.Path)
		case old != f.Digest:
			d.Changed = append(d.Changed, f.Path)
		}
		delete(had, f.Path)
	}
	for p := range had {
		d.Removed = append(d.Removed, p)
	}
	sort.Strings(d.Removed)
	d.Same = len(d.Changed)+len(d.Added)+len(d.Removed) == 0 && !d.OtherPlatform
	return d
}

// explanation is what `cache explain` finds.
type explanation struct {
	Store    string       `json:"store"`
	Key      string       `json:"key"`
	Prefix   string       `json:"prefix"`
	Platform string       `json:"platform"`
	Files    int          `json:"files"`
	Exists   bool         `json:"exists"`
	Entries  []*entryDiff `json:"entries"`
	Nearest  *entryDiff   `json:"nearest,omitempty"`
	Empty    bool         `json:"empty"` // no entry at all in the store
}

func explain(ctx context.Context, st store.Store, key, prefix string, cur *store.KeyInputs, platform string) (*explanation, error) {
	ex := &explanation{Store: st.String(), Key: key, Prefix: prefix, Platform: platform}
	if cur != nil {
		ex.Files = len(cur.Files)
	}
	refs, err := store.NewestFirst(ctx, st, prefix)
	if errors.Is(err, store.ErrNotFound) {
		refs, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, r := range refs {
		if r == nil {
			continue
		}
		d := compareInputs(r, cur, platform)
		if r.Key == key {
			ex.Exists = true
		}
		ex.Entries = append(ex.Entries, d)
	}
	if len(ex.Entries) == 0 {
		all, err := st.ListRefs(ctx, "")
		if err != nil {
			return nil, err
		}
		ex.Empty = len(all) == 0
		return ex, nil
	}
	// Nearest: fewest differences; newest first among equals (refs come newest first).
	best := ex.Entries[0]
	for _, d := range ex.Entries[1:] {
		if d.distance() < best.distance() {
			best = d
		}
	}
	ex.Nearest = best
	return ex, nil
}

func ago(t time.Time) string { return humanize.Ago(time.Now(), t) }

// line is the one-line diagnosis of a miss.
func (ex *explanation) line() string {
	switch {
	case ex.Empty:
		return fmt.Sprintf("the store %s is empty: the first save fills it", ex.Store)
	case ex.Nearest == nil:
		return fmt.Sprintf("no entry in %s starts with %q: the first save under this prefix fills it", ex.Store, ex.Prefix)
	}
	n := ex.Nearest
	return fmt.Sprintf("nearest entry %s saved %s: %s", n.Key, ago(n.Created), n.summary())
}

func (ex *explanation) write(w io.Writer) {
	fmt.Fprintf(w, "key %s from %d file(s); platform %s; store %s\n", ex.Key, ex.Files, ex.Platform, ex.Store)
	switch {
	case ex.Empty:
		fmt.Fprintf(w, "the store is empty: no entry at all\n")
		return
	case len(ex.Entries) == 0:
		fmt.Fprintf(w, "no entry starts with %q (the store holds entries of other prefixes: cache list --store ...)\n", ex.Prefix)
		return
	}
	if ex.Exists {
		fmt.Fprintf(w, "an entry exists under the key itself\n")
	}
	fmt.Fprintf(w, "%d entr%s under %q, newest first:\n", len(ex.Entries), map[bool]string{true: "y", false: "ies"}[len(ex.Entries) == 1], ex.Prefix)
	for _, d := range ex.Entries {
		mark := " "
		if d == ex.Nearest {
			mark = "*"
		}
		fmt.Fprintf(w, "%s %s  saved %s on %s: %s\n", mark, d.Key, ago(d.Created), orDash(d.Platform), d.summary())
	}
	n := ex.Nearest
	fmt.Fprintf(w, "nearest: %s\n", n.Key)
	for _, f := range n.Changed {
		fmt.Fprintf(w, "  changed  %s\n", f)
	}
	for _, f := range n.Added {
		fmt.Fprintf(w, "  added    %s (not in the entry's key)\n", f)
	}
	for _, f := range n.Removed {
		fmt.Fprintf(w, "  removed  %s (in the entry's key, not here)\n", f)
	}
	if n.OtherPlatform {
		fmt.Fprintf(w, "  platform %s, this is %s: pass --cross-platform for a platform-neutral cache, or put {{os}}-{{arch}} in the key\n", n.Platform, ex.Platform)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// diagnoseMiss is the one-line diagnosis a fetch that missed prints: any
// problem reading the store only drops the line.
func (o *fetchOptions) diagnoseMiss(ctx context.Context) string {
	if o.inputs == nil {
		return ""
	}
	st, err := openStore(ctx, &o.console, &o.StoreFlags, o.storeURL)
	if err != nil {
		return ""
	}
	ex, err := explain(ctx, st, o.key, withScope(o.scope, keyPrefix(o.inputs.Template)), o.inputs, platformFor(o.CrossPlatform))
	if err != nil {
		return ""
	}
	return ex.line()
}

// platformFor is the platform entries must match: none for a
// --cross-platform cache.
func platformFor(crossPlatform bool) string {
	if crossPlatform {
		return ""
	}
	return engine.Platform()
}

// explainOptions are the flags of explain: the key flags, the store flags
// but --source's key, and --cross-platform.
type explainOptions struct {
	console
	KeyFlags
	StoreFlags
	CrossPlatform bool
	Output        string
}

func newExplain() *cobra.Command {
	o := &explainOptions{}
	cmd := &cobra.Command{
		Use:   "explain",
		Short: "Say why a key misses: the store's entries under the same prefix, the nearest one, and what differs file by file",
		Long: `explain computes the key a fetch with the same flags would use, lists the
store's entries whose key shares the template's prefix (the part before
{{hash}}), picks the nearest (fewest files that differ, on this platform) and
prints what differs: lock files changed, added or removed, another platform.
Entries record their key inputs when saved by this version.`,
		Example: `  cache explain --source oci://registry:5000/cache/go:go-{{hash}} --pattern '**/go.sum' --workingdir .
  cache explain --store file:///mnt/cache --key 'npm-{{hash}}' --output json`,
		Args: noArgs("source"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			k, err := keyAndStore(&o.console, &o.KeyFlags, &o.StoreFlags, true)
			if err != nil {
				return usageError{err}
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			st, err := openStore(ctx, &o.console, &o.StoreFlags, k.storeURL)
			if err != nil {
				if isConfigError(err) {
					return usageError{err}
				}
				return err
			}
			template := k.key
			if k.inputs != nil {
				template = k.inputs.Template
			}
			ex, err := explain(ctx, st, k.key, withScope(k.scope, keyPrefix(template)), k.inputs, platformFor(o.CrossPlatform))
			if err != nil {
				return withStore(err, k.storeURL)
			}
			if o.Output == "json" {
				return json.NewEncoder(o.stdout).Encode(ex)
			}
			ex.write(o.stdout)
			return nil
		},
	}
	fs := cmd.Flags()
	o.KeyFlags.add(fs)
	fs.StringVar(&o.URI, "source", "", "store URI whose last element is the key template, as fetch's --source")
	fs.StringVar(&o.StoreURL, "store", "", "store URL without a key; use with --key")
	fs.StringVar(&o.BlobQueryParams, "blob-query-params", "", "query parameters appended to the store URL")
	fs.BoolVar(&o.Insecure, "insecure", false, "allow plain HTTP and self-signed TLS certificates for the store")
	fs.BoolVar(&o.CrossPlatform, "cross-platform", false, "the cache is platform-neutral: entries of another OS/architecture are not a difference")
	fs.StringVar(&o.Output, "output", "text", "text, or json")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "give up after this long")
	o.addStall(fs)
	bindEnv(cmd, &o.console, nil)
	return cmd
}
