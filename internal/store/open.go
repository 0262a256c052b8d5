package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// ErrBadURL is wrapped by the error of a store URL that can never work as
// written (no scheme, an unknown scheme, no bucket, a malformed URL): a
// misconfiguration, not a transient problem. Check it with errors.Is.
var ErrBadURL = errors.New("invalid store URL")

// ErrNoURL is wrapped (with ErrBadURL) by the error of an empty store URL.
// The CLI says which flag to pass.
var ErrNoURL = errors.New("no store URL")

// BadURL marks err as a misconfigured store URL (errors.Is(err, ErrBadURL))
// without changing its message.
func BadURL(err error) error {
	if err == nil {
		return nil
	}
	return badURL{err}
}

type badURL struct{ error }

func (b badURL) Unwrap() []error { return []error{b.error, ErrBadURL} }

// Options are the settings every backend may use when it opens.
type Options struct {
	// Insecure allows plain HTTP and unverified TLS (self-signed registries).
	Insecure bool
	// Logf, when set, receives backend diagnostics (retries, fallbacks).
	Logf func(format string, args ...any)
	// Retries is how many times an operation that failed for a transient
	// reason is tried again (see WithRetries): 0 means DefaultRetries, a
	// negative value never.
	Retries int
	// RetryDelay is the first backoff between attempts (it doubles each
	// time, with jitter); 0 means DefaultRetryDelay.
	RetryDelay time.Duration
	// MaxRetryWait caps one backoff and the Retry-After a store may ask
	// for; 0 means DefaultMaxRetryWait.
	MaxRetryWait time.Duration
	// StallTimeout cuts a request that makes no progress for that long
	// (see WatchTransport), so that it is retried rather than waited on;
	// 0 means DefaultStallTimeout, a negative value never. It is distinct
	// from the whole operation's deadline, which the caller's context sets.
	StallTimeout time.Duration
	// TokenFile names a file holding a bearer token, for the stores that
	// take one (http://, https://): read again as it rotates. Empty: the
	// store's own default (CACHE_TOKEN_FILE, CACHE_TOKEN).
	TokenFile string
}

// Stall returns the stall timeout o asks for (0: none).
func (o Options) Stall() time.Duration {
	switch {
	case o.StallTimeout < 0:
		return 0
	case o.StallTimeout == 0:
		return DefaultStallTimeout
	}
	return o.StallTimeout
}

// Opener opens the store a URL names.
type Opener func(ctx context.Context, u *url.URL, opts Options) (Store, error)

// Mux maps URL schemes to Openers. Backends are registered explicitly (see
// package all), never from init.
type Mux struct{ openers map[string]Opener }

// Register makes scheme open with o.
func (m *Mux) Register(scheme string, o Opener) {
	if m.openers == nil {
		m.openers = map[string]Opener{}
	}
	m.openers[scheme] = o
}

// Schemes lists the registered schemes.
func (m *Mux) Schemes() []string {
	s := make([]string, 0, len(m.openers))
	for k := range m.openers {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Open opens the store at raw, a URL such as file:///var/cache or
// oci://registry.example/team/cache, with the retry policy of opts (see
// WithRetries) inside the checks of Checked: Checked(WithRetries(backend)).
func (m *Mux) Open(ctx context.Context, raw string, opts Options) (Store, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	o, ok := m.openers[u.Scheme]
	if !ok {
		return nil, BadURL(fmt.Errorf("store URL %q: unknown scheme %q: use one of %s", Redact(raw), u.Scheme, strings.Join(m.Schemes(), ", ")))
	}
	st, err := o(ctx, u, opts)
	if err != nil {
		return nil, err
	}
	return Checked(WithRetries(st, opts)), nil
}

// ParseURL parses a store URL and checks that it has a scheme.
func ParseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, BadURL(ErrNoURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, BadURL(fmt.Errorf("store URL %q: %v", redactUnparsed(raw), err))
	}
	if u.Scheme == "" {
		ex := Redact(raw)
		if !strings.HasPrefix(ex, "/") {
			ex = "/" + ex
		}
		return nil, BadURL(fmt.Errorf("store URL %q has no scheme: write file://%s for a directory, or oci://REGISTRY/REPO, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or azblob://CONTAINER/PREFIX", Redact(raw), ex))
	}
	return u, nil
}

// Redact removes a password and the values of the query parameters that
// storeerr.SecretParam names (SAS tokens, keys) from a URL so that it can
// be logged: the rules of storeerr.Scrub, applied to a URL's parts.
// Everything else stays as it was written: no escaping is added ({{hash}}
// and endpoint=http://... read as the user typed them).
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return redactUnparsed(raw)
	}
	s := raw
	if _, has := u.User.Password(); has {
		if i := strings.Index(s, "://"); i >= 0 {
			if at := strings.Index(s[i+3:], "@"); at >= 0 {
				s = s[:i+3] + u.User.Username() + s[i+3+at:]
			}
		}
	}
	base, query, ok := strings.Cut(s, "?")
	if !ok {
		return s
	}
	query, frag, hasFrag := strings.Cut(query, "#")
	parts := strings.Split(query, "&")
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if storeerr.SecretParam(k) {
			parts[i] = k + "=" + storeerr.Redacted
			continue
		}
		// A value that is itself a URL (endpoint=http://user:pw@host)
		// loses its password too.
		_, v, _ := strings.Cut(p, "=")
		if uv, err := url.QueryUnescape(v); err == nil {
			v = uv
		}
		if strings.Contains(v, "@") {
			vu, err := url.Parse(v)
			switch {
			case err != nil:
				parts[i] = k + "=" + redactUnparsed(v)
			case vu.User != nil:
				if _, has := vu.User.Password(); has {
					parts[i] = k + "=" + Redact(v)
				}
			}
		}
	}
	s = base + "?" + strings.Join(parts, "&")
	if hasFrag {
		s += "#" + frag
	}
	return s
}

// redactUnparsed names a URL that does not parse, keeping only its scheme
// and host part (what comes before the first '@', '?' or path is dropped if
// it could hold a password).
func redactUnparsed(raw string) string {
	if i := strings.IndexAny(raw, "?@"); i >= 0 {
		return raw[:i] + "..."
	}
	return raw
}

// SplitKey splits a URI that names an entry, as the reference tool's
// --source and --target do, into the store URL and the key:
//
//	oci://registry/repo:KEY      -> oci://registry/repo, KEY
//	s3://bucket/prefix/KEY       -> s3://bucket/prefix, KEY
//	file:///var/cache/KEY        -> file:///var/cache, KEY
//
// The query string, if any, stays with the store URL.
func SplitKey(raw string) (storeURL, key string, err error) {
	u, err := ParseURL(raw)
	if err != nil {
		return "", "", err
	}
	rest, query, _ := strings.Cut(raw, "?")
	if query != "" {
		query = "?" + query
	}
	if u.Scheme == "oci" {
		slash := strings.LastIndex(rest, "/")
		colon := strings.LastIndex(rest, ":")
		if colon <= slash || colon <= len("oci:") || colon == len(rest)-1 {
			return "", "", fmt.Errorf("store URI %q has no tag to use as the key: write it as oci://registry/repo:{{hash}}", Redact(raw))
		}
		return rest[:colon] + query, rest[colon+1:], nil
	}
	i := strings.LastIndex(rest, "/")
	if i <= len(u.Scheme)+3 || i == len(rest)-1 {
		return "", "", fmt.Errorf("store URI %q has no last path element to use as the key: write it as %s://.../{{hash}}", Redact(raw), u.Scheme)
	}
	return rest[:i] + query, rest[i+1:], nil
}
