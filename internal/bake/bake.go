// Package bake builds an image from a base image and cache directories
// (or folders of cache entries) without a container engine: the layers are
// written here, the image is assembled and pushed with
// go-containerregistry (docs/BAKE.md).
//
// A multi-platform base keeps every platform (or those asked for) and
// drops attestation entries; shared layers (a module cache) are built once
// and shared by every platform, per-platform ones (a build cache) go to
// their platform only. Layers are owned by 0:0, group permissions equal
// the owner's, directories are group-writable, names starting with ".wh."
// are refused, entries are sorted and their metadata fixed so that the
// same files give the same digests (and push nothing), and real mtimes are
// kept unless a layer asks for fixed ones (Go trims build cache entries
// whose mtime is more than five days old).
package bake

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ErrConfig is wrapped by the errors of options that cannot work
// whatever the registry says (the command exits 2).
var ErrConfig = errors.New("bake misconfigured")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// DefaultSplitSize bounds a layer's tar bytes: registries and proxies
// refuse huge blobs (Harbor fails above 10 GB, and go-containerregistry
// sends a blob in one request).
const DefaultSplitSize = 2 << 30

// Layer is one source of layers and where it goes in the image.
type Layer struct {
	// Dir is a directory to bake; or Entry, a folder of a cache entry.
	Dir   string
	Entry *Entry
	// Dest is the absolute path of the directory in the image.
	Dest string
	// Platform, when set (os/arch[/variant]), gives the layer to that
	// platform only (a build cache); else every platform shares it.
	Platform string
	// FixedMTime sets every mtime to the image's creation time (a module
	// cache: the same modules give the same digest every night). Never
	// for a Go build cache, which Go trims by mtime.
	FixedMTime bool
}

// Source says where the layer comes from, for messages and history.
func (l *Layer) Source() string {
	if l.Entry != nil {
		return fmt.Sprintf("entry %s#%d", l.Entry.Name, l.Entry.Root)
	}
	return l.Dir
}

// Options are what Bake does.
type Options struct {
	// Base is the base image or index (a tag is resolved to its digest
	// once; everything is read by digest).
	Base string
	// Layers are appended in order.
	Layers []Layer
	// Env are K=V pairs set in every config, replacing existing keys in
	// place.
	Env []string
	// Tags are the references pushed (the first is written, the others
	// tagged); at least one.
	Tags []string
	// Platforms, when set, keeps only these platforms of an index base.
	Platforms []string
	// Compression of the new layers (default gzip; zstd needs an OCI base).
	Compression Compression
	// SplitSize bounds a layer's tar bytes (0: DefaultSplitSize).
	SplitSize int64
	// Created is the configs' and history's creation time (SOURCE_DATE_EPOCH);
	// zero keeps the base's, so that an unchanged bake is the same image.
	Created time.Time
	// TempDir holds the compressed layers until they are pushed (default
	// os.TempDir()).
	TempDir string
	// Insecure allows plain HTTP registries.
	Insecure bool
	// Keychain gives registry credentials (default authn.DefaultKeychain).
	Keychain authn.Keychain
	// Transport is the HTTP transport (default remote.DefaultTransport).
	Transport http.RoundTripper
	// Tool is written into the history entries ("tekton-cache v1.2").
	Tool string
	// Logf prints progress.
	Logf func(string, ...any)
}

// Result is what Bake pushed.
type Result struct {
	// Digest is the pushed image's or index's digest; Ref is the first
	// tag's repository at that digest.
	Digest, Ref string
	// MediaType is the pushed manifest's.
	MediaType types.MediaType
	// Base is the base at its digest.
	Base string
	// Platforms lists the images' platforms (empty for a single image
	// without one).
	Platforms []string
	// Layers counts the new layers (shared ones once); Bytes their
	// compressed size; Files the files in them.
	Layers int
	Bytes  int64
	Files  int
	// PushedBlobs counts the blobs uploaded (layers and configs the
	// registry did not have): 0 when nothing changed.
	PushedBlobs int
}

// Bake builds the image and pushes it.
func Bake(ctx context.Context, o Options) (*Result, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	var nopts []name.Option
	if o.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	baseRef, err := name.ParseReference(o.Base, nopts...)
	if err != nil {
		return nil, configErr("--base %q: %v", o.Base, err)
	}
	tags := make([]name.Tag, len(o.Tags))
	for i, t := range o.Tags {
		if tags[i], err = name.NewTag(t, nopts...); err != nil {
			return nil, configErr("--tag %q: %v: use REPO:TAG, e.g. registry.example.com/ci/go:nightly-{{date}}", t, err)
		}
	}
	counter := &pushCounter{rt: o.Transport}
	if counter.rt == nil {
		counter.rt = remote.DefaultTransport
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc), remote.WithTransport(counter), remote.WithUserAgent("tekton-cache")}

	desc, err := remote.Get(baseRef, ropts...)
	if err != nil {
		return nil, fmt.Errorf("reading the base %s: %w", o.Base, err)
	}
	pinned := baseRef.Context().Digest(desc.Digest.String())
	o.Logf("base %s is %s", o.Base, desc.Digest)
	res := &Result{Base: pinned.String()}

	tmp, err := os.MkdirTemp(o.TempDir, "cache-bake-")
	if err != nil {
		return nil, fmt.Errorf("baking: %w", err)
	}
	defer os.RemoveAll(tmp)
	b := &builder{o: o, tmp: tmp, ctx: ctx, shared: map[int][]*fileLayer{}, res: res}

	var out remote.Taggable
	switch {
	case desc.MediaType.IsIndex():
		idx, err := remote.Index(pinned, ropts...)
		if err != nil {
			return nil, fmt.Errorf("reading the base %s: %w", o.Base, err)
		}
		ni, err := b.index(idx, pinned)
		if err != nil {
			return nil, err
		}
		out = ni
		if err := pushAll(tags, ni, func(t name.Tag) error { return remote.WriteIndex(t, ni, ropts...) }, ropts); err != nil {
			return nil, err
		}
	case desc.MediaType.IsImage():
		img, err := remote.Image(pinned, ropts...)
		if err != nil {
			return nil, fmt.Errorf("reading the base %s: %w", o.Base, err)
		}
		ni, plat, err := b.image(img, nil, pinned)
		if err != nil {
			return nil, err
		}
		if err := b.unusedPlatforms([]v1.Platform{plat}); err != nil {
			return nil, err
		}
		if plat.OS != "" {
			res.Platforms = []string{plat.String()}
		}
		out = ni
		if err := pushAll(tags, ni, func(t name.Tag) error { return remote.Write(t, ni, ropts...) }, ropts); err != nil {
			return nil, err
		}
	default:
		return nil, configErr("--base %s is a %s, not an image or an image index", o.Base, desc.MediaType)
	}
	d, err := out.(interface{ Digest() (v1.Hash, error) }).Digest()
	if err != nil {
		return nil, err
	}
	mt, err := out.(interface {
		MediaType() (types.MediaType, error)
	}).MediaType()
	if err != nil {
		return nil, err
	}
	res.Digest, res.MediaType = d.String(), mt
	res.Ref = tags[0].Context().Digest(d.String()).String()
	res.PushedBlobs = int(counter.blobs.Load())
	return res, nil
}

// pushAll writes the image under the first tag, then points the other
// tags of the same repository at it (no upload), and writes it again to
// another repository (its blobs are checked, and mounted or uploaded).
func pushAll(tags []name.Tag, t remote.Taggable, write func(name.Tag) error, ropts []remote.Option) error {
	for i, tag := range tags {
		var err error
		if i > 0 && tag.Context() == tags[0].Context() {
			err = remote.Tag(tag, t, ropts...)
		} else {
			err = write(tag)
		}
		if err != nil {
			return fmt.Errorf("pushing %s: %w", tag, err)
		}
	}
	return nil
}

func (o *Options) check() error {
	if o.Base == "" {
		return configErr("no --base: pass the base image, e.g. --base golang:1.26@sha256:...")
	}
	if len(o.Tags) == 0 {
		return configErr("no --tag: pass where to push, e.g. --tag registry.example.com/ci/go:nightly-{{date}}")
	}
	if len(o.Layers) == 0 {
		return configErr("no --layer: pass SRC:DEST, e.g. --layer /cache/gomod:/go/pkg/mod")
	}
	switch o.Compression {
	case "":
		o.Compression = Gzip
	case Gzip, Zstd:
	default:
		return configErr("--compression %q: use gzip or zstd", o.Compression)
	}
	if o.SplitSize == 0 {
		o.SplitSize = DefaultSplitSize
	}
	if o.SplitSize < 1<<20 {
		return configErr("--split-size %d: use at least 1MiB", o.SplitSize)
	}
	for i := range o.Layers {
		l := &o.Layers[i]
		if (l.Dir == "") == (l.Entry == nil) {
			return configErr("layer %d: give a directory or a cache entry", i+1)
		}
		if !path.IsAbs(l.Dest) || path.Clean(l.Dest) != l.Dest || l.Dest == "/" {
			return configErr("layer %s: destination %q is not a clean absolute path below /: use e.g. /go/pkg/mod", l.Source(), l.Dest)
		}
		if l.Dest == "/root" || strings.HasPrefix(l.Dest, "/root/") {
			return configErr("layer %s: %s is under /root, which is mode 0700 in Debian-based images, so another user cannot read it: use e.g. /var/cache/go-build and set GOCACHE with --env", l.Source(), l.Dest)
		}
		if err := checkName(l.Dest); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		if l.Platform != "" {
			if _, err := v1.ParsePlatform(l.Platform); err != nil {
				return configErr("layer %s: platform %q: %v", l.Source(), l.Platform, err)
			}
		}
	}
	for _, kv := range o.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsAny(k, " \t\n") {
			return configErr("--env %q: use KEY=VALUE", kv)
		}
	}
	for _, p := range o.Platforms {
		if _, err := v1.ParsePlatform(p); err != nil {
			return configErr("--platform %q: %v", p, err)
		}
	}
	return nil
}

// builder assembles the images of one bake.
type builder struct {
	o      Options
	ctx    context.Context
	tmp    string
	shared map[int][]*fileLayer // shared layers by position in o.Layers, built once
	res    *Result
}

// attestation tells a descriptor of an index that is not a runnable image:
// BuildKit's provenance and SBOM entries (platform unknown/unknown, or
// annotated as an attestation manifest).
func attestation(d v1.Descriptor) bool {
	if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
		return true
	}
	return d.Platform != nil && (d.Platform.OS == "unknown" || d.Platform.Architecture == "unknown")
}

// index bakes every wanted platform of idx into a new index of the same
// media type.
func (b *builder) index(idx v1.ImageIndex, pinned name.Digest) (v1.ImageIndex, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the base %s: %w", b.o.Base, err)
	}
	mt, err := idx.MediaType()
	if err != nil {
		return nil, err
	}
	var adds []mutate.IndexAddendum
	var plats []v1.Platform
	for _, d := range im.Manifests {
		if attestation(d) {
			b.o.Logf("left out %s: an attestation, not an image", d.Digest)
			continue
		}
		if !d.MediaType.IsImage() {
			return nil, configErr("--base %s holds %s, a %s: only indexes of images are supported", b.o.Base, d.Digest, d.MediaType)
		}
		if !b.wanted(d.Platform) {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading the base's %s: %w", d.Digest, err)
		}
		ni, plat, err := b.image(img, d.Platform, pinned)
		if err != nil {
			return nil, err
		}
		plats = append(plats, plat)
		b.res.Platforms = append(b.res.Platforms, plat.String())
		adds = append(adds, mutate.IndexAddendum{Add: ni, Descriptor: v1.Descriptor{
			MediaType: d.MediaType, Platform: d.Platform, Annotations: d.Annotations, URLs: d.URLs,
		}})
	}
	if len(adds) == 0 {
		return nil, configErr("--base %s has no image for --platform %s", b.o.Base, strings.Join(b.o.Platforms, ","))
	}
	if err := b.unusedPlatforms(plats); err != nil {
		return nil, err
	}
	var out v1.ImageIndex = mutate.IndexMediaType(empty.Index, mt)
	if mt == types.OCIImageIndex {
		out = mutate.Annotations(out, baseAnnotations(pinned)).(v1.ImageIndex)
	}
	return mutate.AppendManifests(out, adds...), nil
}

// wanted tells whether --platform keeps platform p.
func (b *builder) wanted(p *v1.Platform) bool {
	if len(b.o.Platforms) == 0 {
		return true
	}
	if p == nil {
		return false
	}
	for _, s := range b.o.Platforms {
		want, _ := v1.ParsePlatform(s)
		if p.Satisfies(*want) {
			return true
		}
	}
	return false
}

// unusedPlatforms refuses a per-platform layer that no image got: a typo
// or a platform the base lacks, whose cache would silently be missing.
func (b *builder) unusedPlatforms(plats []v1.Platform) error {
	for i := range b.o.Layers {
		l := &b.o.Layers[i]
		if l.Platform == "" {
			continue
		}
		want, _ := v1.ParsePlatform(l.Platform)
		found := false
		for _, p := range plats {
			found = found || p.Satisfies(*want)
		}
		if !found {
			var have []string
			for _, p := range plats {
				have = append(have, p.String())
			}
			return configErr("layer %s is for %s, which the baked image has not (it has %s)", l.Source(), l.Platform, strings.Join(have, ", "))
		}
	}
	return nil
}

func baseAnnotations(pinned name.Digest) map[string]string {
	return map[string]string{
		"org.opencontainers.image.base.digest": pinned.DigestStr(),
		"org.opencontainers.image.base.name":   pinned.Context().Name(),
	}
}

// image appends the layers for platform (the index's word, else the
// config's) to img and sets the config.
func (b *builder) image(img v1.Image, plat *v1.Platform, pinned name.Digest) (v1.Image, v1.Platform, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, v1.Platform{}, fmt.Errorf("reading the base's config: %w", err)
	}
	p := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant, OSVersion: cf.OSVersion}
	if plat != nil {
		p = *plat
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, p, err
	}
	oci := mt == types.OCIManifestSchema1
	layerType := types.DockerLayer
	switch {
	case oci && b.o.Compression == Zstd:
		layerType = types.OCILayerZStd
	case oci:
		layerType = types.OCILayer
	case b.o.Compression == Zstd:
		return nil, p, configErr("--compression zstd needs an OCI base, and %s is a Docker image (%s): use gzip", b.o.Base, mt)
	}
	created := b.o.Created
	if created.IsZero() {
		created = cf.Created.Time
	}
	var adds []mutate.Addendum
	for i := range b.o.Layers {
		l := &b.o.Layers[i]
		if l.Platform != "" {
			want, _ := v1.ParsePlatform(l.Platform)
			if !p.Satisfies(*want) {
				continue
			}
		}
		layers, err := b.layers(i, layerType, created)
		if err != nil {
			return nil, p, err
		}
		for j, fl := range layers {
			adds = append(adds, mutate.Addendum{
				Layer:     fl,
				MediaType: layerType,
				History: v1.History{
					Author: "tekton-cache", Created: v1.Time{Time: created},
					CreatedBy: fmt.Sprintf("%s bake: %s (%d/%d)", b.o.Tool, l.Dest, j+1, len(layers)),
					Comment:   "tekton-cache bake",
				},
			})
		}
	}
	ni, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, p, err
	}
	ncf, err := ni.ConfigFile()
	if err != nil {
		return nil, p, err
	}
	ncf = ncf.DeepCopy()
	ncf.Config.Env = SetEnv(ncf.Config.Env, b.o.Env)
	ncf.Created = v1.Time{Time: created}
	if ni, err = mutate.ConfigFile(ni, ncf); err != nil {
		return nil, p, err
	}
	if oci {
		ni = mutate.Annotations(ni, baseAnnotations(pinned)).(v1.Image)
	}
	return ni, p, nil
}

// layers builds the layers of o.Layers[i] (once for a shared layer).
func (b *builder) layers(i int, mt types.MediaType, created time.Time) ([]*fileLayer, error) {
	l := &b.o.Layers[i]
	if ls, ok := b.shared[i]; ok && l.Platform == "" {
		return ls, nil
	}
	s := &layerSet{dir: b.tmp, name: fmt.Sprintf("layer%d", i), split: b.o.SplitSize, mediaType: mt, comp: b.o.Compression}
	var fixed time.Time
	if l.FixedMTime {
		fixed = created
		if fixed.IsZero() {
			fixed = time.Unix(0, 0)
		}
	}
	var err error
	if l.Entry != nil {
		err = writeEntry(b.ctx, s, l.Entry, l.Dest, fixed)
	} else {
		err = walkDir(s, l.Dir, l.Dest, fixed, b.o.Logf)
	}
	if err == nil {
		err = s.close()
	}
	if err != nil {
		s.abort()
		return nil, err
	}
	var size int64
	files := 0
	for _, fl := range s.layers {
		size += fl.size
		files += fl.files
	}
	b.res.Layers += len(s.layers)
	b.res.Bytes += size
	b.res.Files += files
	b.o.Logf("layer %s -> %s: %d file(s), %d byte(s) compressed in %d layer(s)", l.Source(), l.Dest, files, size, len(s.layers))
	if l.Platform == "" {
		b.shared[i] = s.layers
	}
	return s.layers, nil
}

// SetEnv sets each K=V of set in env: an existing K is replaced where it
// is, a new one appended. ${NAME} in V is NAME's value in env as it was
// (PATH=/opt/tools/bin:${PATH}), empty when env has no NAME.
func SetEnv(env, set []string) []string {
	out := append([]string(nil), env...)
	base := map[string]string{}
	for _, e := range env {
		if k, v, ok := strings.Cut(e, "="); ok {
			if _, seen := base[k]; !seen {
				base[k] = v
			}
		}
	}
	for _, kv := range set {
		k, v, _ := strings.Cut(kv, "=")
		kv = k + "=" + envRef.ReplaceAllStringFunc(v, func(m string) string { return base[m[2:len(m)-1]] })
		replaced := false
		for i, e := range out {
			if ek, _, _ := strings.Cut(e, "="); ek == k {
				if !replaced {
					out[i] = kv
					replaced = true
				} else {
					out[i] = "" // a duplicate key in the base: dropped below
				}
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	kept := out[:0]
	for _, e := range out {
		if e != "" {
			kept = append(kept, e)
		}
	}
	return kept
}

// envRef is a ${NAME} in an --env value.
var envRef = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*\}`)

// datePattern is the placeholder ExpandTag replaces.
var datePattern = regexp.MustCompile(`\{\{\s*date\s*\}\}`)

// ExpandTag replaces {{date}} in tag by t's date in UTC, YYYYMMDD.
func ExpandTag(tag string, t time.Time) string {
	return datePattern.ReplaceAllString(tag, t.UTC().Format("20060102"))
}

// pushCounter counts blob uploads that completed (the PUT that closes an
// upload session, with its digest).
type pushCounter struct {
	rt    http.RoundTripper
	blobs atomic.Int64
}

func (c *pushCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") &&
		r.URL.Query().Get("digest") != "" && resp.StatusCode == http.StatusCreated {
		c.blobs.Add(1)
	}
	return resp, err
}
