package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/gc"
)

// ageValue is a duration flag that also takes days and weeks ("7d", "2w",
// "1d12h"), as retention policies are written.
type ageValue struct{ d *time.Duration }

func (a ageValue) String() string {
	if a.d == nil || *a.d == 0 {
		return "0"
	}
	if *a.d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", *a.d/(24*time.Hour))
	}
	return a.d.String()
}

func (ageValue) Type() string { return "duration" }

func (a ageValue) Set(s string) error {
	d, err := parseAge(s)
	if err != nil {
		return err
	}
	*a.d = d
	return nil
}

// parseAge reads a Go duration whose leading part may be in days (d) or
// weeks (w): "7d", "2w", "1d12h", "90m".
func parseAge(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("an empty duration: use e.g. 7d, 2w, 36h or 90m")
	}
	rest, total := s, time.Duration(0)
	for _, u := range []struct {
		suffix string
		d      time.Duration
	}{{"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}} {
		if i := strings.Index(rest, u.suffix); i > 0 {
			n, err := strconv.ParseUint(rest[:i], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("%q is not a duration: use e.g. 7d, 2w, 36h or 90m", s)
			}
			total += time.Duration(n) * u.d
			rest = rest[i+1:]
		}
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%q is not a duration: use e.g. 7d, 2w, 36h or 90m", s)
		}
		total += d
	}
	return total, nil
}

// sizeValue is a byte-size flag: "10GB", "500MiB", "1.5G", "1024".
type sizeValue struct{ n *int64 }

func (v sizeValue) String() string {
	if v.n == nil || *v.n == 0 {
		return "0"
	}
	return humanBytes(*v.n)
}

func (sizeValue) Type() string { return "size" }

func (v sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.n = n
	return nil
}

// parseSize reads a size with an optional unit: B, KB/MB/GB/TB (powers of
// 1000), KiB/MiB/GiB/TiB (powers of 1024); K, M, G, T alone are 1024's.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	units := map[string]float64{"": 1, "b": 1,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
		"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
	mult, ok := units[strings.ToLower(unit)]
	f, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || f < 0 || f*mult > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size: use e.g. 10GB, 500MiB or 1073741824", s)
	}
	return int64(f * mult), nil
}

// pruneResult is what prune --output json prints.
type pruneResult struct {
	Store        string        `result:"store"`
	DryRun       bool          `result:"dry-run"`
	Removed      []prunedEntry `result:"removed"`
	Kept         []string      `result:"kept"`
	BlobsSwept   bool          `result:"blobs-swept"`
	BlobsNote    string        `result:"blobs-note,omitempty"`
	BlobsRemoved int           `result:"blobs-removed"`
	BytesRemoved int64         `result:"bytes-removed"`
	BlobsKept    int           `result:"blobs-kept-for-grace"`
	Withdrawn    []string      `result:"withdrawn"`
}

// prunedEntry is one entry a prune removes.
type prunedEntry struct {
	Key  string `result:"key"`
	Rule string `result:"rule"`
}

// MarshalJSON writes the entry as results are written.
func (e prunedEntry) MarshalJSON() ([]byte, error) { return marshalResults(e) }

func newPrune() *cobra.Command {
	m := &manageOptions{}
	var p gc.Policy
	var byUse bool
	p.Grace = gc.DefaultGrace
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove entries by age, count and total size, then the blobs no entry names",
		Long: `prune removes the entries a policy selects, then (on stores that list their
blobs: file://, S3, GCS, Azure) the blobs no remaining entry names. The rules
combine; an entry goes when any rule selects it:

  --older-than D   entries created more than D ago (7d, 36h)
  --keep N         all but the N newest entries
  --max-size SIZE  the oldest entries, until what the rest take (blobs shared
                   by several entries counted once) fits in SIZE

Only entries whose key starts with --prefix are considered (default: all);
the blobs of the others are always kept. Refs are deleted first. A blob no
entry names is deleted only once it was written at least --grace ago and a
previous prune already found it unnamed at least --grace ago (prune records
what it saw in the store), so a save running meanwhile, uploading new blobs
or building on an entry being removed, always publishes a whole entry: run
prune on a schedule (nightly) and the blobs go on the next run. On an OCI
registry, entries are deleted through the registry API (tags and manifests)
and the registry's own garbage collection removes the blobs: docs/PRUNE.md
says what each registry needs.

The plan is printed first; --dry-run prints it and changes nothing.`,
		Example: `  cache prune --store s3://ci-cache/go --older-than 7d --dry-run
  cache prune --store oci://registry:5000/cache/app --prefix go- --keep 5
  cache prune --store gs://ci-cache --max-size 10GB --older-than 14d`,
		Args: noArgs("store"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := p.Validate(); err != nil {
				return usageError{err}
			}
			ctx, cancel := m.withTimeout(cmd.Context())
			defer cancel()
			st, prefix, err := m.open(ctx)
			if err != nil {
				return err
			}
			p.Prefix = prefix
			w := cmd.OutOrStdout()
			text := m.Output == "text"
			logf := func(string, ...any) {}
			if text {
				logf = func(f string, args ...any) { fmt.Fprintf(w, f+"\n", args...) }
			}
			// The plan first: a dry run of the same policy.
			plan, err := gc.Prune(ctx, st, p, gc.Options{DryRun: true, ByUse: byUse})
			if err != nil {
				return err
			}
			res := plan
			if text {
				printPlan(w, plan, m.DryRun)
			}
			if !m.DryRun {
				if res, err = gc.Prune(ctx, st, p, gc.Options{Logf: logf, ByUse: byUse}); err != nil {
					return err
				}
			}
			if text {
				return nil
			}
			out := pruneResult{Store: storeName(m.StoreURL), DryRun: m.DryRun, Removed: []prunedEntry{}, Kept: []string{}, Withdrawn: res.Blobs.Withdrawn,
				BlobsSwept: res.Blobs.Swept, BlobsNote: res.Blobs.Why, BlobsRemoved: len(res.Blobs.Deleted), BytesRemoved: res.Blobs.DeletedBytes, BlobsKept: res.Blobs.Young + res.Blobs.Waiting}
			for _, d := range res.Removed {
				out.Removed = append(out.Removed, prunedEntry{Key: d.Key, Rule: d.Rule})
			}
			for _, r := range res.Kept {
				out.Kept = append(out.Kept, r.Key)
			}
			if out.Withdrawn == nil {
				out.Withdrawn = []string{}
			}
			return printResults(w, out)
		},
	}
	m.addFlags(cmd)
	fs := cmd.Flags()
	fs.Var(ageValue{&p.OlderThan}, "older-than", "remove entries created more than this long ago (7d, 2w, 36h)")
	fs.IntVar(&p.Keep, "keep", 0, "keep only the N newest entries")
	fs.Var(sizeValue{&p.MaxSize}, "max-size", "remove the oldest entries until the rest fit in this (10GB, 500MiB)")
	fs.Var(ageValue{&p.Grace}, "grace", "keep a blob no entry names until it is this old and was found unnamed this long ago (a save may be using it)")
	fs.BoolVar(&m.DryRun, "dry-run", false, "print the plan and change nothing")
	fs.BoolVar(&byUse, "by-last-use", false, "rank and age entries by their last use (the later of created and the last restore cache-serve recorded in this store) instead of created")
	return cmd
}

// printPlan says what a prune removes and keeps.
func printPlan(w interface{ Write([]byte) (int, error) }, plan *gc.Result, dry bool) {
	verb := "will remove"
	if dry {
		verb = "would remove"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "plan: %s %d entries, keep %d\n", verb, len(plan.Removed), len(plan.Kept))
	for _, d := range plan.Removed {
		created := ""
		if d.Ref != nil {
			created = d.Ref.Created.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  remove\t%s\t%s\t%s\n", d.Key, created, d.Rule)
	}
	tw.Flush()
	switch {
	case !plan.Blobs.Swept:
		fmt.Fprintf(w, "blobs: %s\n", plan.Blobs.Why)
	default:
		fmt.Fprintf(w, "blobs: %s %d no entry names (%s); %d unnamed kept for the grace period, %d named\n",
			verb, len(plan.Blobs.Deleted), humanBytes(plan.Blobs.DeletedBytes), plan.Blobs.Young+plan.Blobs.Waiting, plan.Blobs.Live)
	}
}
