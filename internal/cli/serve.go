package cli

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/httpstore"
)

// newServe is `cache serve`: the client side of cache-serve's extras
// (the server itself is the cache-serve binary).
func newServe() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Talk to a cache-serve server: get a GitHub Actions cache runtime token",
		Args:  noArgs(""),
	}
	cmd.AddCommand(newServeToken())
	return cmd
}

// newServeToken is `cache serve token`.
func newServeToken() *cobra.Command {
	var serverURL, tokenFile string
	var insecure bool
	cmd := &cobra.Command{
		Use:   "token --server URL [--token-file FILE]",
		Short: "Exchange a static or ServiceAccount token for a GitHub Actions cache runtime token (printed on the last line)",
		Long: `cache serve token asks cache-serve (POST /v1/gha/token) for a runtime token of
its GitHub Actions cache, in exchange for this step's credential: the file of
--token-file or CACHE_TOKEN_FILE (a projected ServiceAccount token), or
CACHE_TOKEN; none where the server allows anonymous access. The runtime token
is printed on the last line of stdout, for BuildKit's type=gha token= or
ACTIONS_RUNTIME_TOKEN; it carries the credential's scopes.`,
		Args: noArgs("server"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ApplyEnv(cmd.Flags()); err != nil {
				return usageError{err}
			}
			if serverURL == "" {
				return usageError{errors.New("--server is required: the URL of cache-serve (http://cache-serve.NAMESPACE:8080)")}
			}
			u, err := url.Parse(serverURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				return usageError{fmt.Errorf("--server %q: write http://HOST:PORT or https://HOST:PORT", serverURL)}
			}
			st, err := httpstore.Open(cmd.Context(), u, store.Options{Insecure: insecure, TokenFile: tokenFile})
			if err != nil {
				return err
			}
			tok, err := st.(*httpstore.Store).GHAToken(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "runtime token of %s, good until %s\n", st, tok.ExpiresAt.Format(time.RFC3339))
			fmt.Fprintln(cmd.OutOrStdout(), tok.Token)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&serverURL, "server", "", "the URL of cache-serve")
	fs.StringVar(&tokenFile, "token-file", "", "the file of the credential (a projected ServiceAccount token; default CACHE_TOKEN_FILE, else CACHE_TOKEN)")
	fs.BoolVar(&insecure, "insecure", false, "accept a self-signed TLS certificate")
	return cmd
}
