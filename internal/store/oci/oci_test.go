package oci_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/oci"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestConformance(t *testing.T) {
	host := registry(t, false)
	storetest.Run(t, func(t *testing.T) store.Store { return store.Checked(openStore(t, host)) }, storetest.Options{NoModTime: true, Lacks: []string{"BlobLister", "MetaStore"}})
}

// BenchmarkConformance measures the store operations against a registry,
// through the checks Mux.Open adds.
func BenchmarkConformance(b *testing.B) {
	host := registry(b, false)
	storetest.Bench(b, func(b *testing.B) store.Store { return store.Checked(openStore(b, host)) })
}

// TestConformanceBasicAuth runs the suite against a registry that requires
// basic auth, with the credentials in $DOCKER_CONFIG/config.json.
func TestConformanceBasicAuth(t *testing.T) {
	host := registry(t, true)
	dockerConfig(t, host, authUser, authPass, "config.json")
	storetest.Run(t, func(t *testing.T) store.Store { return store.Checked(openStore(t, host)) }, storetest.Options{NoModTime: true, Lacks: []string{"BlobLister", "MetaStore"}})
}

// roundTrip puts a blob and a ref and reads them back.
func roundTrip(t *testing.T, s store.Store) {
	t.Helper()
	ref := storetest.NewRef(t, s, "round-trip", time.Now().Truncate(time.Millisecond), 2)
	if err := s.PutRef(ctx(t), ref); err != nil {
		t.Fatalf("PutRef: %v", err)
	}
	got, err := s.GetRef(ctx(t), ref.Key)
	if err != nil {
		t.Fatalf("GetRef: %v", err)
	}
	if got.Index != ref.Index || len(got.Packs) != 2 || !got.Created.Equal(ref.Created) {
		t.Fatalf("GetRef = %+v, want %+v", got, ref)
	}
}

// TestDockerConfigJSONSecret: DOCKER_CONFIG names a directory holding a
// mounted kubernetes.io/dockerconfigjson secret (.dockerconfigjson, no
// config.json), as openshift-pipelines/tekton-caches accepts; or the file.
func TestDockerConfigJSONSecret(t *testing.T) {
	host := registry(t, true)
	t.Run("dir", func(t *testing.T) {
		dockerConfig(t, host, authUser, authPass, oci.DockerConfigSecretFile)
		roundTrip(t, openStore(t, host))
	})
	t.Run("file", func(t *testing.T) {
		dir := dockerConfig(t, host, authUser, authPass, oci.DockerConfigSecretFile)
		t.Setenv("DOCKER_CONFIG", filepath.Join(dir, oci.DockerConfigSecretFile))
		roundTrip(t, openStore(t, host))
	})
	t.Run("config.json wins", func(t *testing.T) {
		dir := dockerConfig(t, host, authUser, "wrong", oci.DockerConfigSecretFile)
		dockerConfig(t, host, authUser, authPass, "config.json")
		os.Rename(filepath.Join(dir, oci.DockerConfigSecretFile), filepath.Join(os.Getenv("DOCKER_CONFIG"), oci.DockerConfigSecretFile))
		roundTrip(t, openStore(t, host))
	})
}

// TestUnauthorized: wrong or missing credentials give one line that names
// the registry and says unauthorized, without the password.
func TestUnauthorized(t *testing.T) {
	host := registry(t, true)
	const wrong = "hunter2-wrong-password"
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T)
	}{
		{"wrong password", func(t *testing.T) { dockerConfig(t, host, authUser, wrong, "config.json") }},
		{"wrong password in secret", func(t *testing.T) { dockerConfig(t, host, authUser, wrong, oci.DockerConfigSecretFile) }},
		{"no credentials", func(t *testing.T) { t.Setenv("DOCKER_CONFIG", t.TempDir()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup(t)
			s := openStore(t, host)
			storetest.CheckAllOps(t, s, storetest.ErrorWant{Store: s.String(), Says: []string{"unauthorized", host}, Secrets: []string{wrong, authPass}})
		})
	}
}

// TestUnreachable: nothing listens on the port; the error is one line that
// names the store and says the registry cannot be reached.
func TestUnreachable(t *testing.T) {
	host := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	s := openStore(t, host)
	start := time.Now()
	_, err := s.GetRef(ctx(t), "k")
	if err == nil {
		t.Fatal("GetRef on an unreachable registry succeeded")
	}
	msg := err.Error()
	t.Logf("error: %s (after %v)", msg, time.Since(start))
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	for _, want := range []string{s.String(), "cannot reach the registry at " + host, "connection refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unreachable registry must not look like a miss: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v: a refused connection should not be retried for long", d)
	}
}

func TestNotFoundErrors(t *testing.T) {
	host := registry(t, false)
	s := openStore(t, host) // the repository does not exist yet
	_, err := s.GetRef(ctx(t), "missing")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRef in a missing repository: %v, want ErrNotFound", err)
	}
	want := fmt.Sprintf("%s: get ref %q: ", s, "missing")
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
	keys, err := s.ListRefs(ctx(t), "")
	if err != nil || len(keys) != 0 {
		t.Errorf("ListRefs in a missing repository = %v, %v; want none, nil", keys, err)
	}
}

// TestExistingBlobNotUploadedAgain counts the uploads the registry receives.
func TestExistingBlobNotUploadedAgain(t *testing.T) {
	host := registry(t, false)
	repo := newRepo(t)
	first := openRepo(t, host, repo)
	data, _ := storetest.RandomBlob(t, 64<<10)
	storetest.PutBlob(t, first, data)

	// A new Store (so nothing is remembered in-process) finds it there.
	c := newCounter()
	second := openRepo(t, host, repo, oci.WithTransport(c))
	storetest.PutBlob(t, second, data)
	if n := c.count("POST upload"); n != 0 {
		t.Errorf("a blob the registry has was uploaded again (%d uploads started)", n)
	}
	if n := c.count("HEAD blob"); n != 1 {
		t.Errorf("%d HEAD requests for an existing blob, want 1", n)
	}
	// The same Store remembers what it put: no request at all.
	c.reset()
	storetest.PutBlob(t, second, data)
	if n := c.count("HEAD blob") + c.count("POST upload"); n != 0 {
		t.Errorf("%d requests to put a blob this store put already, want 0", n)
	}

	// New blobs, in parallel, are each uploaded once.
	c.reset()
	const n = 8
	blobs := make([][]byte, n)
	for i := range blobs {
		blobs[i], _ = storetest.RandomBlob(t, 300<<10)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range blobs {
		wg.Go(func() {
			errs[i] = second.PutBlob(ctx(t), digest.FromBytes(blobs[i]), int64(len(blobs[i])), bytes.NewReader(blobs[i]))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("parallel PutBlob %d: %v", i, err)
		}
	}
	if got := c.count("POST upload"); got != n {
		t.Errorf("%d uploads started for %d new blobs", got, n)
	}
	for _, b := range blobs {
		if info, err := first.StatBlob(ctx(t), digest.FromBytes(b)); err != nil || info.Size != int64(len(b)) {
			t.Errorf("StatBlob after parallel puts = %+v, %v", info, err)
		}
	}
}

// referenceToolImage builds what openshift-pipelines/tekton-caches pushes:
// an empty OCI image with one gzip tar layer of the cached folder.
func referenceToolImage(t *testing.T, files map[string]string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, c := range files {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(c)) //nolint:errcheck // a bytes.Buffer
	}
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestForeignEntry: a tag that holds the reference tool's image (or an
// index, or another tool's artifact) is refused with ErrForeignEntry and a
// message that says what it is; restore keys skip it.
func TestForeignEntry(t *testing.T) {
	host := registry(t, false)
	s := openStore(t, host)
	repo := s.Repository()

	files := map[string]string{"gocache/a.txt": "hello", "gomodcache/b.txt": "world"}
	if err := remote.Write(repo.Tag("go-0123abc"), referenceToolImage(t, files)); err != nil {
		t.Fatalf("pushing a reference-tool image: %v", err)
	}
	idx, err := random.Index(100, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(repo.Tag("go-index"), idx); err != nil {
		t.Fatalf("pushing an index: %v", err)
	}

	_, err = s.GetRef(ctx(t), "go-0123abc")
	if !errors.Is(err, oci.ErrForeignEntry) || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRef of a reference-tool image: %v, want ErrForeignEntry and ErrNotFound", err)
	}
	t.Logf("reference tool image: %v", err)
	for _, want := range []string{s.String() + ":go-0123abc", "is a plain container image (1 layer, gzip), not a tekton-cache entry", "openshift-pipelines/tekton-caches"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	_, err = s.GetRef(ctx(t), "go-index")
	if !errors.Is(err, oci.ErrForeignEntry) || !strings.Contains(err.Error(), "is an image index (2 manifests)") {
		t.Errorf("GetRef of an index: %v", err)
	}
	t.Logf("index: %v", err)

	// Restore keys skip foreign tags and find ours.
	ours := storetest.NewRef(t, s, "go-ours", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), 1)
	if err := s.PutRef(ctx(t), ours); err != nil {
		t.Fatal(err)
	}
	got, err := store.Newest(ctx(t), s, "go-")
	if err != nil || got.Key != "go-ours" {
		t.Fatalf("Newest(go-) = %v, %v; want go-ours", got, err)
	}
}

func readTar(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	got := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[strings.TrimPrefix(h.Name, "/")] = string(b)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// zstdTar returns files as a zstd-compressed tar stream, like a pack.
func zstdTar(t *testing.T, files map[string]string, order []string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	for _, n := range order {
		c := files[n]
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(c)) //nolint:errcheck // a zstd writer on a bytes.Buffer
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPacksAreLayers proves that packs are valid OCI layers: an entry's
// manifest, read by go-containerregistry as an image and flattened as
// `crane export` does, gives back the files of its packs.
func TestPacksAreLayers(t *testing.T) {
	host := registry(t, false)
	s := openStore(t, host)
	packs := []map[string]string{
		{"go/pkg/mod/a.go": "package a\n", "go/pkg/mod/b.go": "package b\n"},
		{"go-build/00/0123-d": strings.Repeat("object code ", 1000), "go-build/README": "This directory holds cached build artifacts.\n"},
	}
	orders := [][]string{{"go/pkg/mod/a.go", "go/pkg/mod/b.go"}, {"go-build/00/0123-d", "go-build/README"}}
	index, _ := storetest.RandomBlob(t, 500)
	ref := &store.Ref{
		Format:   format.Version,
		Key:      "export-me",
		Index:    storetest.PutBlob(t, s, index),
		Created:  time.Now().UTC(),
		Tool:     "oci_test",
		Platform: "linux/amd64",
	}
	want := map[string]string{}
	for i, p := range packs {
		ref.Packs = append(ref.Packs, storetest.PutBlob(t, s, zstdTar(t, p, orders[i])))
		for k, v := range p {
			want[k] = v
		}
	}
	if err := s.PutRef(ctx(t), ref); err != nil {
		t.Fatalf("PutRef: %v", err)
	}

	img, err := remote.Image(s.Repository().Tag(ref.Key), remote.WithContext(ctx(t)))
	if err != nil {
		t.Fatalf("remote.Image: %v", err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != format.ArtifactType || m.Config.MediaType != format.IndexMediaType || len(m.Layers) != 2 || m.Layers[0].MediaType != types.OCILayerZStd {
		t.Errorf("manifest = %+v", m)
	}
	if m.Annotations[oci.AnnotationKey] != ref.Key || m.Annotations[oci.AnnotationCreated] != ref.Created.Format(time.RFC3339Nano) ||
		m.Annotations[oci.AnnotationTool] != "oci_test" || m.Annotations[oci.AnnotationPlatform] != "linux/amd64" || m.Annotations[oci.AnnotationFormat] != "1" {
		t.Errorf("annotations = %v", m.Annotations)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	if got := readTar(t, rc); !equalMaps(got, want) {
		t.Errorf("flattened image holds %v, want %v", keys(got), keys(want))
	}
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestOpenURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"oci://127.0.0.1:5000/cache", "oci://127.0.0.1:5000/cache"},
		{"oci://registry.example/team/cache/", "oci://registry.example/team/cache"},
		{"oci://localhost:5000/a/b/c", "oci://localhost:5000/a/b/c"},
	} {
		u, _ := url.Parse(tc.in)
		s, err := oci.Open(context.Background(), u, store.Options{})
		if err != nil {
			t.Errorf("Open(%q): %v", tc.in, err)
			continue
		}
		if s.String() != tc.want {
			t.Errorf("Open(%q).String() = %q, want %q", tc.in, s, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"oci://registry.example", "has no repository"},
		{"oci://registry.example/", "has no repository"},
		{"oci:///cache", "has no registry"},
		{"oci://registry.example/cache:tag", "names a tag or digest"},
		{"oci://registry.example/cache@sha256:abcd", "names a tag or digest"},
		{"oci://user:hunter2@registry.example/cache", "credentials in the URL"},
		{"oci://registry.example/cache?x=1", "no query"},
		{"oci://registry.example/Cache", "oci://registry.example/Cache"},
		{"oci://myregistry/cache", "not a registry host"},
		{"s3://bucket/x", "not an oci:// URL"},
	} {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		_, err = oci.Open(context.Background(), u, store.Options{})
		if err == nil {
			t.Errorf("Open(%q) succeeded", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "\n") {
			t.Errorf("Open(%q) = %q, want one line with %q and no password", tc.in, err, tc.want)
		}
	}
}

// TestInsecure: --insecure lets a registry that is not on loopback be used
// over plain HTTP. The registry is on 127.0.0.1 but named by a host that
// name.Registry does not treat as local, so HTTP is used only because of Insecure.
func TestInsecure(t *testing.T) {
	host := registry(t, false)
	_, port, _ := strings.Cut(host, ":")
	alias := "oci-registry.test:" + port // dialled as host by the transport below
	rt := http.DefaultTransport.(*http.Transport).Clone()
	rt.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == alias {
			addr = host
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	u := &url.URL{Scheme: "oci", Host: alias, Path: "/" + newRepo(t)}
	s, err := oci.OpenURL(context.Background(), u, store.Options{Insecure: true}, oci.WithTransport(rt))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
	if s.Repository().Scheme() != "http" {
		t.Errorf("scheme = %s, want http", s.Repository().Scheme())
	}
	// Without Insecure the same name is tried over HTTPS only, and fails.
	s2, err := oci.OpenURL(context.Background(), u, store.Options{}, oci.WithTransport(rt))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.GetRef(ctx(t), "x"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRef over HTTPS from a plain HTTP registry: %v, want a failure", err)
	} else {
		t.Logf("without --insecure: %v", err)
	}
}
