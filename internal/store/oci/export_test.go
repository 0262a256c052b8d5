package oci

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// The options only tests use (exported to package oci_test from here).

// WithTransport sends every request through rt instead of a clone of
// remote.DefaultTransport (default: that clone, with TLS verification off
// when store.Options.Insecure is set). Tests use it to count requests.
func WithTransport(rt http.RoundTripper) Option { return func(c *settings) { c.rt = rt } }

// WithKeychain resolves credentials with kc instead of the docker config
// chain described in the package documentation (the default).
func WithKeychain(kc authn.Keychain) Option { return func(c *settings) { c.kc = kc } }

// SetTime records key's time in the times manifest (zero removes it).
func SetTime(ctx context.Context, s *Store, key string, t time.Time) { s.setTime(ctx, key, t) }

// Times returns what the times manifest holds.
func Times(ctx context.Context, t testing.TB, s *Store) map[string]time.Time {
	t.Helper()
	times, _, err := s.getTimes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return times
}
