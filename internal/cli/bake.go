package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/bake"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/oci"
)

// bakeOptions are the flags of bake.
type bakeOptions struct {
	console
	Base        string
	Layers      []string
	Env         []string
	Tags        []string
	Platforms   []string
	Compression string
	SplitSize   int64
	Insecure    bool
	Timeout     time.Duration
	Output      string
	ResultsDir  string
	Quiet       bool
}

// bakeResult is what bake reports (results files and the JSON line).
type bakeResult struct {
	Status      string  `result:"status"` // baked or error
	Error       string  `result:"error"`
	Seconds     float64 `result:"seconds"`
	Digest      string  `result:"digest"`
	Image       string  `result:"image"` // the first tag's repository at the digest
	Base        string  `result:"base"`  // the base at its digest
	Tags        string  `result:"tags"`
	Platforms   string  `result:"platforms"`
	Layers      int     `result:"layers"`
	Files       int     `result:"files"`
	Bytes       int64   `result:"bytes"`
	PushedBlobs int     `result:"pushed-blobs"`
}

// lineList is a repeatable flag whose environment value holds one item a
// line: an --env value may hold commas (GOPRIVATE=a,b).
type lineList struct{ items *[]string }

func (l lineList) String() string { return strings.Join(*l.items, "\n") }
func (l lineList) Type() string   { return "stringArray" }
func (l lineList) Set(v string) error {
	for _, s := range strings.Split(v, "\n") {
		if s = strings.TrimSpace(s); s != "" {
			*l.items = append(*l.items, s)
		}
	}
	return nil
}

func newBake() *cobra.Command {
	o := &bakeOptions{}
	cmd := &cobra.Command{
		Use:   "bake",
		Short: "Build and push an image: a base plus layers of cache directories or entries (a nightly image with warm caches), without Docker",
		Long: `bake appends layers made of directories (or of a folder of a cache entry) to a
base image or multi-platform index, sets environment variables and pushes the
result; see docs/BAKE.md. Layers are owned by 0:0 with group permissions equal
to the owner's and group-writable directories (any UID in group 0 can use and
add to them), sorted with fixed metadata (the same files give the same digest
and push nothing), and keep real mtimes (Go trims build cache entries by mtime).

--layer SRC:DEST[:platform=OS/ARCH][:mtime=fixed]
  SRC a directory, DEST an absolute path in the image. platform= gives the
  layer to that platform only (a build cache warmed on it); without it every
  platform shares one layer (a module cache). mtime=fixed sets every mtime to
  the image's creation time (never for a Go build cache).
--layer entry:STORE-URL:KEY#ROOT:DEST[:...]
  folder ROOT (its position, or its name) of a cache entry, streamed from the
  store.`,
		Example: `  cache bake --base golang:1.26@sha256:... \
    --layer /cache/gomod:/go/pkg/mod:mtime=fixed \
    --layer /cache/gobuild-amd64:/var/cache/go-build:platform=linux/amd64 \
    --env GOMODCACHE=/go/pkg/mod --env GOCACHE=/var/cache/go-build --env GOFLAGS=-modcacherw \
    --tag registry.example.com/ci/go:nightly-{{date}} --tag registry.example.com/ci/go:nightly
  cache bake --base golang:1.26 --layer 'entry:oci://registry:5000/cache:go-abc123#1:/go/pkg/mod' --tag ...`,
		Args: noArgs(""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBake(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.Base, "base", "", "base image or index (read by digest: a tag is resolved once)")
	fs.Var(newList(&o.Layers, false), "layer", "SRC:DEST[:platform=OS/ARCH][:mtime=fixed], or entry:STORE-URL:KEY#ROOT:DEST (repeatable)")
	fs.Var(lineList{&o.Env}, "env", "KEY=VALUE set in the image's config, replacing the key where the base has it (repeatable)")
	fs.Var(newList(&o.Tags, false), "tag", "REPO:TAG to push, {{date}} is today's date (UTC, YYYYMMDD); the first is written, the others point at it (repeatable)")
	fs.Var(newList(&o.Platforms, false), "platform", "keep only these platforms of an index base (default: every platform; attestations are always dropped)")
	fs.StringVar(&o.Compression, "compression", "gzip", "gzip (every runtime), or zstd (OCI bases only; containerd 1.5+, Docker 23+, CRI-O)")
	o.SplitSize = bake.DefaultSplitSize
	fs.Var(SizeValue(&o.SplitSize), "split-size", "largest layer (uncompressed tar bytes): a larger directory becomes several layers (registries refuse huge blobs)")
	fs.BoolVar(&o.Insecure, "insecure", false, "allow plain HTTP registries and stores")
	fs.DurationVar(&o.Timeout, "timeout", time.Hour, "give up after this long")
	fs.StringVar(&o.Output, "output", "text", "text (the image's REPO@DIGEST on stdout), or json: one JSON line")
	fs.StringVar(&o.ResultsDir, "results-dir", "", "directory to write one file per result into (digest, image, base, tags, platforms, layers, files, bytes, pushed-blobs, status, error, seconds)")
	fs.BoolVar(&o.Quiet, "quiet", false, "print warnings only")
	bindEnv(cmd, &o.console, &o.Quiet)
	return cmd
}

// bakeLayer parses one --layer.
func (o *bakeOptions) bakeLayer(ctx context.Context, spec string) (bake.Layer, error) {
	var l bake.Layer
	var rest []string
	if after, ok := strings.CutPrefix(spec, "entry:"); ok {
		uri, tail, ok := cutLast(after, "#")
		if !ok {
			return l, usageError{fmt.Errorf("--layer %q: use entry:STORE-URL:KEY#ROOT:DEST, e.g. entry:oci://registry/cache:go-KEY#0:/go/pkg/mod", spec)}
		}
		parts := strings.Split(tail, ":")
		if len(parts) < 2 {
			return l, usageError{fmt.Errorf("--layer %q: no destination after #%s: add :DEST, e.g. #0:/go/pkg/mod", spec, tail)}
		}
		e, err := o.entry(ctx, uri, parts[0])
		if err != nil {
			return l, err
		}
		l.Entry, l.Dest, rest = e, parts[1], parts[2:]
	} else {
		parts := strings.Split(spec, ":")
		if len(parts) < 2 || parts[0] == "" {
			return l, usageError{fmt.Errorf("--layer %q: use SRC:DEST, e.g. /cache/gomod:/go/pkg/mod", spec)}
		}
		l.Dir, l.Dest, rest = parts[0], parts[1], parts[2:]
		if fi, err := os.Stat(l.Dir); err != nil || !fi.IsDir() {
			return l, usageError{fmt.Errorf("--layer %q: %s is not a directory", spec, l.Dir)}
		}
	}
	for _, opt := range rest {
		k, v, _ := strings.Cut(opt, "=")
		switch {
		case k == "platform" && v != "":
			l.Platform = v
		case k == "mtime" && v == "fixed":
			l.FixedMTime = true
		case k == "mtime" && v == "keep":
		default:
			return l, usageError{fmt.Errorf("--layer %q: unknown option %q: use platform=OS/ARCH or mtime=fixed", spec, opt)}
		}
	}
	return l, nil
}

// entry reads the entry of uri (a store URL whose last element is the
// key) and finds its folder root (a position or a name).
func (o *bakeOptions) entry(ctx context.Context, uri, root string) (*bake.Entry, error) {
	storeURL, key, err := store.SplitKey(uri)
	if err != nil {
		return nil, usageError{fmt.Errorf("--layer entry:%s: %w", uri, err)}
	}
	st, err := openStore(ctx, &o.console, &StoreFlags{Insecure: o.Insecure}, storeURL)
	if err != nil {
		if isConfigError(err) {
			return nil, usageError{err}
		}
		return nil, err
	}
	e, err := loadEntry(ctx, st, key)
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(root)
	if err != nil {
		n = -1
		for i, r := range e.Index.Roots {
			if r == root {
				n = i
			}
		}
	}
	if n < 0 || n >= len(e.Index.Roots) {
		return nil, usageError{fmt.Errorf("--layer entry:%s#%s: the entry's folders are %s: give a position (0 to %d) or one of these names", uri, root, strings.Join(e.Index.Roots, ", "), len(e.Index.Roots)-1)}
	}
	return &bake.Entry{Name: key, Blobs: st, Index: e.Index, Root: n}, nil
}

// cutLast cuts s around the last sep.
func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

func runBake(ctx context.Context, o *bakeOptions) error {
	out := &bakeResult{}
	err := o.bake(ctx, out)
	out.Status = "baked"
	if err != nil {
		out.Status, out.Error = statusError, oneLine(err.Error())
		if errors.Is(err, bake.ErrConfig) {
			err = usageError{err}
		}
	}
	out.Seconds = time.Since(o.start).Seconds()
	if o.ResultsDir != "" {
		if werr := writeResults(o.ResultsDir, out); werr != nil {
			o.warnf("%v", werr)
		}
	}
	if o.Output == "json" {
		if perr := printResults(o.stdout, out); perr != nil && err == nil {
			err = perr
		}
	} else if err == nil {
		fmt.Fprintln(o.stdout, out.Image)
	}
	if err != nil {
		return fmt.Errorf("bake failed: %w", err)
	}
	return nil
}

func (o *bakeOptions) bake(ctx context.Context, out *bakeResult) error {
	if err := checkOutput(o.Output); err != nil {
		return err
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	opts := bake.Options{
		Base: o.Base, Env: o.Env, Platforms: o.Platforms, Compression: bake.Compression(o.Compression),
		SplitSize: o.SplitSize, Insecure: o.Insecure, Tool: "tekton-cache " + version(), Logf: o.infof,
	}
	now := time.Now()
	if sde := os.Getenv("SOURCE_DATE_EPOCH"); sde != "" {
		sec, err := strconv.ParseInt(sde, 10, 64)
		if err != nil {
			return usageError{fmt.Errorf("SOURCE_DATE_EPOCH=%q: use seconds since 1970", sde)}
		}
		opts.Created = time.Unix(sec, 0).UTC()
	}
	for _, t := range o.Tags {
		opts.Tags = append(opts.Tags, bake.ExpandTag(t, now))
	}
	for _, spec := range o.Layers {
		l, err := o.bakeLayer(ctx, spec)
		if err != nil {
			return err
		}
		opts.Layers = append(opts.Layers, l)
	}
	kc, err := oci.Keychain(o.infof)
	if err != nil {
		return usageError{err}
	}
	opts.Keychain = kc
	res, err := bake.Bake(ctx, opts)
	if err != nil {
		return err
	}
	out.Digest, out.Image, out.Base = res.Digest, res.Ref, res.Base
	out.Tags, out.Platforms = strings.Join(opts.Tags, ","), strings.Join(res.Platforms, ",")
	out.Layers, out.Files, out.Bytes, out.PushedBlobs = res.Layers, res.Files, res.Bytes, res.PushedBlobs
	o.infof("baked %s from %s: %d new layer(s), %d file(s), %s; pushed %d blob(s); tags %s",
		res.Ref, res.Base, res.Layers, res.Files, humanBytes(res.Bytes), res.PushedBlobs, out.Tags)
	return nil
}
