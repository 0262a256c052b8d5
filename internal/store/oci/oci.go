package oci

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// Store keeps cache entries in one repository of an OCI registry.
// It is safe for concurrent use: PutBlob may run in parallel.
type Store struct {
	url   string // oci://registry/repo, for messages
	repo  name.Repository
	auth  authn.Authenticator
	creds string // where the credentials come from, for messages
	rt    http.RoundTripper
	ropts []remote.Option
	logf  func(string, ...any)

	puller *remote.Puller
	// foreign holds the keys already reported as foreign by GetRef.
	foreign sync.Map
	// pusher puts manifests and staged blobs; DeleteBlob replaces it so
	// that it forgets the blobs it uploaded.
	pusher atomic.Pointer[remote.Pusher]
	// push is the client of blob uploads (upload.go).
	push pushClient
	// have holds the blobs this Store put or found (a PutBlob of one
	// costs nothing); missing those a StatBlob just found missing, so that
	// the PutBlob that follows does not ask again. DeleteBlob clears both.
	have, missing sync.Map
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Deleter = (*Store)(nil)
)

// Option tunes a Store made by New.
type Option func(*settings)

type settings struct {
	rt http.RoundTripper
	kc authn.Keychain
}

// Jobs bounds the blob downloads in flight at once per Store (go-containerregistry
// limits them; callers bound their own parallelism well below this).
const Jobs = 64

// Open implements store.Opener for oci://registry[:port]/repo/path URLs.
func Open(ctx context.Context, u *url.URL, opts store.Options) (store.Store, error) {
	return OpenURL(ctx, u, opts)
}

// OpenURL is Open with a *Store result and Options.
func OpenURL(ctx context.Context, u *url.URL, opts store.Options, options ...Option) (*Store, error) {
	raw := store.Redact(u.String())
	switch {
	case u.Scheme != "oci":
		return nil, store.BadURL(fmt.Errorf("store URL %q: not an oci:// URL", raw))
	case u.User != nil:
		return nil, store.BadURL(fmt.Errorf("store URL %q: credentials in the URL are not supported: put them in DOCKER_CONFIG (config.json or .dockerconfigjson)", raw))
	case u.Host == "":
		return nil, store.BadURL(fmt.Errorf("store URL %q has no registry: write it as oci://registry[:port]/repository", raw))
	case u.RawQuery != "" || u.Fragment != "":
		return nil, store.BadURL(fmt.Errorf("store URL %q: oci:// URLs take no query or fragment", raw))
	case strings.Trim(u.Path, "/") == "":
		return nil, store.BadURL(fmt.Errorf("store URL %q has no repository: write it as oci://%s/repository", raw, u.Host))
	case strings.ContainsAny(u.Path, ":@"):
		return nil, store.BadURL(fmt.Errorf("store URL %q names a tag or digest: give the repository only, the key is passed separately", raw))
	}
	return New(ctx, u.Host+"/"+strings.Trim(u.Path, "/"), opts, options...)
}

// New returns the store in repository ("registry[:port]/repo/path").
// It does not contact the registry: the first request does.
func New(ctx context.Context, repository string, opts store.Options, options ...Option) (*Store, error) {
	var c settings
	for _, o := range options {
		o(&c)
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var nopts []name.Option
	if opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	repo, err := name.NewRepository(repository, nopts...)
	if err != nil {
		return nil, store.BadURL(fmt.Errorf("oci://%s: %s", repository, storeerr.OneLine(err.Error())))
	}
	host, _, _ := strings.Cut(repository, "/")
	if repo.RegistryStr() != host && host != "docker.io" {
		return nil, store.BadURL(fmt.Errorf("oci://%s: %q is not a registry host: write oci://registry.example/%s (a host has a '.' or ':', or is localhost)", repository, host, repository))
	}
	s := &Store{url: "oci://" + repository, repo: repo, logf: logf}

	kc, creds := c.kc, "the keychain given"
	if kc == nil {
		if kc, creds, err = keychain(logf); err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
	}
	if s.auth, s.creds, err = resolveAuth(ctx, kc, repo, creds); err != nil {
		return nil, err
	}

	s.rt = c.rt
	if s.rt == nil {
		t := remote.DefaultTransport.(*http.Transport).Clone()
		if opts.Insecure {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
		}
		s.rt = t
	}
	// Stall detection on every request; the retries are the store
	// layer's (store.WithRetries), so go-containerregistry makes one
	// attempt, and every retry is logged once, by one policy.
	s.rt = store.WatchTransport(s.rt, opts.Stall())
	s.ropts = []remote.Option{
		remote.WithAuth(s.auth),
		remote.WithTransport(s.rt),
		remote.WithUserAgent("tekton-cache"),
		remote.WithJobs(Jobs),
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
	}
	if s.puller, err = remote.NewPuller(s.ropts...); err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	if err := s.resetPusher(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) resetPusher() error {
	p, err := remote.NewPusher(s.ropts...)
	if err != nil {
		return fmt.Errorf("%s: %w", s, err)
	}
	s.pusher.Store(p)
	return nil
}

// String implements store.Store.
func (s *Store) String() string { return s.url }

// Repository returns the repository the store is in.
func (s *Store) Repository() name.Repository { return s.repo }

// StatBlob implements store.Store with a HEAD of the blob. A registry does
// not say when a blob was written: Modified is zero.
func (s *Store) StatBlob(ctx context.Context, d digest.Digest) (store.BlobInfo, error) {
	n, err := s.headBlob(ctx, d)
	if err != nil {
		err = s.fail("stat blob "+d.Short(), err)
		if errors.Is(err, store.ErrNotFound) {
			s.missing.Store(d, true)
		}
		return store.BlobInfo{}, err
	}
	return store.BlobInfo{Size: n}, nil
}

// headBlob returns the size of blob d (a HEAD).
func (s *Store) headBlob(ctx context.Context, d digest.Digest) (int64, error) {
	l, err := s.puller.Layer(ctx, s.repo.Digest(d.String()))
	if err != nil {
		return 0, err
	}
	return l.Size()
}

// GetBlob implements store.Store with a GET of the blob; go-containerregistry
// verifies the digest as it streams, and a mismatch fails the last Read.
func (s *Store) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	op := "get blob " + d.Short()
	l, err := s.puller.Layer(ctx, s.repo.Digest(d.String()))
	if err != nil {
		return nil, s.fail(op, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, s.fail(op, err)
	}
	return &blobReader{rc: rc, fail: func(err error) error { return s.fail("reading blob "+d.Short(), err) }}, nil
}

var _ store.BlobRanger = (*Store)(nil)

// GetBlobRange implements store.BlobRanger with a GET of the blob with a
// Range header (distribution, and most registries, answer 206). A registry
// that ignores the range answers 200 with the whole blob, and the bytes
// before off are skipped. Callers verify the blob's digest.
func (s *Store) GetBlobRange(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	op := fmt.Sprintf("get blob %s from byte %d", d.Short(), off)
	rt, err := transport.NewWithContext(ctx, s.repo.Registry, s.auth, s.rt, []string{s.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, s.fail(op, err)
	}
	u := url.URL{Scheme: s.repo.Scheme(), Host: s.repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", s.repo.RepositoryStr(), d)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, s.fail(op, err)
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, s.fail(op, err)
	}
	if err := transport.CheckError(resp, http.StatusOK, http.StatusPartialContent); err != nil {
		resp.Body.Close()
		return nil, s.fail(op, err)
	}
	fail := func(err error) error { return s.fail("reading blob "+d.Short(), err) }
	if resp.StatusCode == http.StatusOK && off > 0 {
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			resp.Body.Close()
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fail(err)
		}
	}
	return &blobReader{rc: resp.Body, fail: fail}, nil
}

// blobReader names the store in the errors of Read.
type blobReader struct {
	rc   io.ReadCloser
	fail func(error) error
}

func (b *blobReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = b.fail(err)
	}
	return n, err
}

func (b *blobReader) Close() error { return b.rc.Close() }

// PutBlob implements store.Store. It returns at once when this Store put or
// found the blob already, and after a HEAD when the registry has it (no
// HEAD when this Store's StatBlob just found it missing: the engine stats
// before it puts). Otherwise it uploads the bytes in one PUT (pushBlob),
// checking them against d and size as they stream; the registry checks the
// digest too before it commits the upload. An upload that fails or is
// cancelled is never committed, so nothing becomes readable.
func (s *Store) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	if _, ok := s.have.Load(d); ok {
		return nil
	}
	op := "put blob " + d.Short()
	if _, known := s.missing.LoadAndDelete(d); !known {
		n, err := s.headBlob(ctx, d)
		if err == nil && n == size {
			s.have.Store(d, true)
			return nil
		}
		if err != nil {
			if err = s.fail(op, err); !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
	}
	body := &uploadBody{r: digest.NewVerifier(store.ContextReader(ctx, r), d, size)}
	err := s.pushBlob(ctx, d, size, body)
	body.Close() // waits for a read in flight: r is not used after PutBlob returns
	if err != nil {
		return s.fail(op, err)
	}
	s.have.Store(d, true)
	return nil
}

// uploadBody lets PutBlob stop the HTTP transport reading the caller's
// reader once PutBlob returns (the transport may still hold the body).
type uploadBody struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func (b *uploadBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errors.New("upload finished")
	}
	return b.r.Read(p)
}

func (b *uploadBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

// GetRef implements store.Store: it reads the manifest tagged key.
func (s *Store) GetRef(ctx context.Context, key string) (*store.Ref, error) {
	if key == TimesTag {
		return nil, s.errReserved("get ref")
	}
	desc, err := s.puller.Get(ctx, s.repo.Tag(key))
	if err != nil {
		return nil, s.fail(fmt.Sprintf("get ref %q", key), err)
	}
	ref, err := decodeManifest(s.url+":"+key, key, string(desc.MediaType), desc.Manifest)
	if errors.Is(err, ErrForeignEntry) {
		// Callers may only see "not found": say why once.
		if _, seen := s.foreign.LoadOrStore(key, true); !seen {
			s.logf("%v", err)
		}
	}
	return ref, err
}

// rawManifest is a manifest to PUT as it is.
type rawManifest []byte

// RawManifest implements remote.Taggable.
func (m rawManifest) RawManifest() ([]byte, error) { return m, nil }

// MediaType gives the Content-Type of the PUT.
func (m rawManifest) MediaType() (types.MediaType, error) { return ManifestMediaType, nil }

// PutRef implements store.Store: it PUTs the entry's manifest under the tag
// ref.Key, which the registry swaps in one step. The registry refuses a
// manifest whose blobs it lacks, so callers put the blobs first. Then it
// records ref.Created in the times manifest (TimesTag), a hint whose
// failure is logged, not returned.
func (s *Store) PutRef(ctx context.Context, ref *store.Ref) error {
	if ref.Key == TimesTag {
		return s.errReserved("put ref")
	}
	raw, err := encodeManifest(ref)
	if err != nil {
		return err
	}
	if err := s.pusher.Load().Put(ctx, s.repo.Tag(ref.Key), rawManifest(raw)); err != nil {
		return s.fail(fmt.Sprintf("put ref %q", ref.Key), err)
	}
	s.setTime(ctx, ref.Key, ref.Created)
	return nil
}

// ListRefs implements store.Store: it lists the repository's tags (the
// registry pages them) and keeps those that start with prefix, but
// TimesTag. A missing repository has no tags.
func (s *Store) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	tags, err := s.puller.List(ctx, s.repo)
	if err != nil {
		err = s.fail(fmt.Sprintf("list tags %q", prefix), err)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	var keys []string
	for _, t := range tags {
		if strings.HasPrefix(t, prefix) && t != TimesTag && store.ValidateKey(t) == nil {
			keys = append(keys, t)
		}
	}
	return keys, nil
}

// DeleteRef implements store.Deleter: it deletes the manifest the tag key
// points at (each entry's manifest names its key, so no other key shares
// it). The registry must allow deletes.
func (s *Store) DeleteRef(ctx context.Context, key string) error {
	if key == TimesTag {
		return s.errReserved("delete ref")
	}
	op := fmt.Sprintf("delete ref %q", key)
	desc, err := s.puller.Head(ctx, s.repo.Tag(key))
	if err != nil {
		if err = s.fail(op, err); errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	if err := s.pusher.Load().Delete(ctx, s.repo.Digest(desc.Digest.String())); err != nil {
		if err = s.fail(op, err); errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	s.setTime(ctx, key, time.Time{})
	return nil
}

// DeleteBlob implements store.Deleter with DELETE /v2/<repo>/blobs/<digest>.
// The registry must allow deletes.
func (s *Store) DeleteBlob(ctx context.Context, d digest.Digest) error {
	op := "delete blob " + d.Short()
	s.have.Delete(d)
	defer s.resetPusher() //nolint:errcheck // it worked with the same options in New
	rt, err := transport.NewWithContext(ctx, s.repo.Registry, s.auth, s.rt, []string{s.repo.Scope(transport.DeleteScope)})
	if err != nil {
		return s.fail(op, err)
	}
	u := url.URL{Scheme: s.repo.Scheme(), Host: s.repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", s.repo.RepositoryStr(), d)}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.String(), nil)
	if err != nil {
		return s.fail(op, err)
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return s.fail(op, err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusAccepted, http.StatusOK, http.StatusNoContent); err != nil {
		if err = s.fail(op, err); errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}
