package oci

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

func testStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(context.Background(), "registry.example:5000/team/cache", store.Options{}, WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestErrorMessages(t *testing.T) {
	s := testStore(t)
	put, _ := http.NewRequest(http.MethodPut, "https://registry.example:5000/v2/team/cache/manifests/k", nil)
	regErr := func(status int, code transport.ErrorCode, req *http.Request) error {
		te := &transport.Error{StatusCode: status, Request: req}
		if code != "" {
			te.Errors = []transport.Diagnostic{{Code: code, Message: "details\nfrom the registry"}}
		}
		return fmt.Errorf("wrapped: %w", te)
	}
	for _, tc := range []struct {
		name     string
		err      error
		want     string
		notFound bool
	}{
		{"unknown tag", regErr(404, transport.ManifestUnknownErrorCode, nil), "not found", true},
		{"unknown repository", regErr(404, transport.NameUnknownErrorCode, nil), "repository not found", true},
		{"HEAD 404", regErr(404, "", nil), "not found", true},
		{"unauthorized", regErr(401, transport.UnauthorizedErrorCode, nil), "unauthorized: check the credentials for registry.example:5000 (the keychain given; none for registry.example:5000 there)", false},
		{"denied", regErr(403, transport.DeniedErrorCode, nil), "denied: the credentials for registry.example:5000", false},
		{"rate limit", regErr(429, transport.TooManyRequestsErrorCode, nil), "rate limited", false},
		{"manifest refused", regErr(400, transport.ManifestInvalidErrorCode, put), "the registry refused the entry's manifest (MANIFEST_INVALID: details from the registry): it may not accept OCI artifacts", false},
		{"other", regErr(500, "", nil), "registry answered HTTP 500 Internal Server Error", false},
		{"refused", &url.Error{Op: "Get", URL: "https://x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}, "cannot reach the registry at registry.example:5000: connection refused", false},
		{"no such host", &url.Error{Op: "Get", URL: "https://x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "registry.example"}}}, "cannot reach the registry at registry.example:5000: no such host", false},
		{"tls", &url.Error{Op: "Get", URL: "https://x", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, "TLS certificate of registry.example:5000 not trusted", false},
		{"plain http", errors.New(`Get "https://x/v2/": http: server gave HTTP response to HTTPS client`), "registry.example:5000 speaks plain HTTP, not HTTPS: use --insecure", false},
		{"multi-line", errors.New("first line\n\tsecond line\nthird"), "first line second line third", false},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), "cancelled", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.fail("get ref \"k\"", tc.err)
			msg := err.Error()
			if want := "oci://registry.example:5000/team/cache: get ref \"k\": " + tc.want; !strings.HasPrefix(msg, want) {
				t.Errorf("message\n%q\ndoes not start with\n%q", msg, want)
			}
			if strings.ContainsAny(msg, "\n\t") {
				t.Errorf("message is not one line: %q", msg)
			}
			if errors.Is(err, store.ErrNotFound) != tc.notFound {
				t.Errorf("errors.Is(ErrNotFound) = %v, want %v", !tc.notFound, tc.notFound)
			}
			if !errors.Is(err, tc.err) {
				t.Error("the cause is not wrapped")
			}
		})
	}
	if !errors.Is(s.fail("x", context.Canceled), context.Canceled) {
		t.Error("context.Canceled is not kept")
	}
}

func testRef() *store.Ref {
	return &store.Ref{
		Format:   format.Version,
		Key:      "go-abc",
		Index:    format.Descriptor{Digest: digest.FromBytes([]byte("index")), Size: 5},
		Packs:    []format.Descriptor{{Digest: digest.FromBytes([]byte("p1")), Size: 2}, {Digest: digest.FromBytes([]byte("p2")), Size: 2}},
		Created:  time.Date(2026, 11, 22, 10, 11, 12, 123456789, time.UTC),
		Tool:     "v1.2.3",
		Platform: "linux/arm64",
	}
}

func TestManifestRoundTrip(t *testing.T) {
	want := testRef()
	raw, err := encodeManifest(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeManifest("x:go-abc", "go-abc", ManifestMediaType, raw)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
	}
	if _, err := decodeManifest("x:other", "other", ManifestMediaType, raw); err == nil || !strings.Contains(err.Error(), "damaged tekton-cache entry: it holds key \"go-abc\"") {
		t.Errorf("a manifest under the wrong tag: %v", err)
	}
}

func TestDamagedManifests(t *testing.T) {
	raw, _ := encodeManifest(testRef())
	for _, tc := range []struct{ from, to, want string }{
		{`"org.opencontainers.image.created":"2026-11-22T10:11:12.123456789Z"`, `"org.opencontainers.image.created":"yesterday"`, "not an RFC 3339 time"},
		{`"dev.tekton-cache.format":"1"`, `"dev.tekton-cache.format":"one"`, "not a number"},
		{`"dev.tekton-cache.format":"1"`, `"dev.tekton-cache.format":"2"`, "format 2"},
		{`"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd"`, `"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip"`, "not application/vnd.oci.image.layer.v1.tar+zstd"},
		{`"digest":"sha256:`, `"digest":"md5:`, "damaged"},
	} {
		bad := strings.Replace(string(raw), tc.from, tc.to, 1)
		if bad == string(raw) {
			t.Fatalf("%q not in %s", tc.from, raw)
		}
		_, err := decodeManifest("x:go-abc", "go-abc", ManifestMediaType, []byte(bad))
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrForeignEntry) {
			t.Errorf("%s -> %s: %v, want a damaged-entry error with %q", tc.from, tc.to, err, tc.want)
		}
	}
}

func TestForeignManifests(t *testing.T) {
	const (
		ociImage = "application/vnd.oci.image.manifest.v1+json"
		docker2  = "application/vnd.docker.distribution.manifest.v2+json"
	)
	for _, tc := range []struct {
		name, contentType, manifest, want string
		refTool                           bool
	}{
		{"reference tool", ociImage, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip"}]}`, "a plain container image (1 layer, gzip)", true},
		{"docker image", docker2, `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip"},{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip"},{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd"}]}`, "a plain container image (3 layers, gzip+zstd)", true},
		{"no mediaType field", ociImage, `{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar"}]}`, "a plain container image (1 layer, uncompressed)", true},
		{"helm chart", ociImage, `{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.helm.config.v1+json"},"layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip"}]}`, `an OCI artifact with config type "application/vnd.cncf.helm.config.v1+json" (1 layer)`, false},
		{"other artifact", ociImage, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","config":{"mediaType":"application/vnd.oci.empty.v1+json"},"layers":[]}`, `an OCI artifact of type "application/vnd.dev.sigstore.bundle.v0.3+json" (0 layers)`, false},
		{"index", "application/vnd.oci.image.index.v1+json", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{},{}]}`, "an image index (3 manifests)", false},
		{"schema 1", "application/vnd.docker.distribution.manifest.v1+prettyjws", `{"schemaVersion":1,"fsLayers":[{}]}`, "a Docker schema 1 image", false},
		{"garbage", "text/plain", `<html>`, "an unreadable manifest (invalid character '<' looking for beginning of value)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeManifest("oci://r/c:k", "k", tc.contentType, []byte(tc.manifest))
			if !errors.Is(err, ErrForeignEntry) || !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("err = %v, want ErrForeignEntry and ErrNotFound", err)
			}
			want := "oci://r/c:k is " + tc.want + ", not a tekton-cache entry: "
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("message\n%q\ndoes not start with\n%q", err, want)
			}
			if got := strings.Contains(err.Error(), "openshift-pipelines/tekton-caches"); got != tc.refTool {
				t.Errorf("mentions the reference tool: %v, want %v (%v)", got, tc.refTool, err)
			}
		})
	}
}

// TestUnreachableIsTyped: a registry that cannot be reached gives a
// *storeerr.NetError that says why (what the retry policy reads), worded as
// the registry's.
func TestUnreachableIsTyped(t *testing.T) {
	s := testStore(t)
	dial := func(err error) error {
		return &url.Error{Op: "Get", URL: "https://registry.example:5000/v2/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: err}}
	}
	for _, tc := range []struct {
		name         string
		err          error
		want         string
		refused, dns bool
	}{
		{"refused", dial(os.NewSyscallError("connect", syscall.ECONNREFUSED)), "connection refused (is it running, and are the host and port right?)", true, false},
		{"no such host", dial(&net.DNSError{Err: "no such host", Name: "registry.example", IsNotFound: true}), "no such host", false, true},
		{"no route", dial(os.NewSyscallError("connect", syscall.EHOSTUNREACH)), "no route to host", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.fail("stat blob", tc.err)
			if want := "oci://registry.example:5000/team/cache: stat blob: cannot reach the registry at registry.example:5000: " + tc.want; err.Error() != want {
				t.Errorf("message\n%q\nwant\n%q", err, want)
			}
			var ne *storeerr.NetError
			if !errors.As(err, &ne) || ne.Refused != tc.refused || ne.DNS != tc.dns || !errors.Is(err, tc.err) {
				t.Errorf("fail = %#v: no NetError{Refused: %v, DNS: %v} wrapping the cause", err, tc.refused, tc.dns)
			}
		})
	}
}
