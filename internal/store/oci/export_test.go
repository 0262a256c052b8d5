package oci

import (
	"net/http"

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
