// Command cache-serve serves a cache store over HTTP (docs/SERVE.md,
// docs/HTTP.md) to `cache fetch` and `cache upload` with http:// store
// URLs. It is a second binary of the module, so that the server's code and
// dependencies stay out of the step image's `cache`.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/cli"
	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/server/gha"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
)

func main() {
	// SIGTERM (a rollout, a node drain) stops taking requests and finishes
	// the ones in flight.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := newCommand(os.Stderr, nil).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cache-serve:", err)
		os.Exit(exitCode(err))
	}
}

// usageError marks a misconfiguration (a flag, a CACHE_* value, the tokens
// file, a combination of them): exit 2, as cache's.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// exitCode is 2 for a misconfiguration (a usageError, a bad store URL),
// else 1.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, store.ErrBadURL) {
		return 2
	}
	return 1
}

// options are the flags of cache-serve.
type options struct {
	listen          string
	storeURL        string
	insecure        bool
	tokensFile      string
	anonReads       bool
	anonWrites      bool
	anonScope       string
	tlsCert, tlsKey string
	maxBodySize     int64
	shutdownTimeout time.Duration
	ttl             time.Duration
	maxSize         int64
	gcInterval      time.Duration
	gcGrace         time.Duration
	metrics         bool
	logFormat       string
	maxUploads      int
	statusPage      bool
	// TokenReview (auth.go).
	tokenReview   bool
	tokenAudience string
	kubeconfig    string
	// The GitHub Actions cache (gha.go).
	gha            bool
	ghaKeyFile     string
	ghaTokenTTL    time.Duration
	ghaReservation time.Duration
	ghaURL         string
}

// newCommand is the cache-serve command; ready, when set, receives the
// address it listens on once it does (for tests).
func newCommand(stderr io.Writer, ready func(addr string)) *cobra.Command {
	o := options{maxBodySize: server.DefaultMaxBodySize, ttl: 7 * 24 * time.Hour, metrics: true, logFormat: "json", maxUploads: server.DefaultMaxConcurrentUploads}
	cmd := &cobra.Command{
		Use:   "cache-serve",
		Short: "Serve a cache store over HTTP to cache fetch and cache upload",
		Long: `cache-serve answers the native HTTP store API (docs/HTTP.md) over a backing
store: a directory (file:///data, a PVC) or a bucket (s3://, gs://, azblob://).
Clients use it with --store http://HOST:PORT and a bearer token in CACHE_TOKEN
or CACHE_TOKEN_FILE.

Every flag can also be set with an environment variable: CACHE_ and the flag
name in capitals, '-' as '_' (--tokens-file is CACHE_TOKENS_FILE).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.NoArgs(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cli.ApplyEnv(cmd.Flags()); err != nil {
				return usageError{err}
			}
			lg, err := newLogger(stderr, o.logFormat)
			if err != nil {
				return err
			}
			return run(cmd.Context(), o, lg, ready)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	fs := cmd.Flags()
	fs.StringVar(&o.listen, "listen", ":8080", "the address to listen on")
	fs.StringVar(&o.storeURL, "store", "file:///data", "the backing store: file:///DIR, s3://BUCKET/PREFIX, gs://..., azblob://..., oci://...")
	fs.BoolVar(&o.insecure, "insecure", false, "allow plain HTTP and self-signed TLS certificates for the backing store")
	fs.StringVar(&o.tokensFile, "tokens-file", "", "a YAML or JSON file of tokens (their sha256), each with a write scope and read scopes (docs/HTTP.md)")
	fs.BoolVar(&o.anonReads, "allow-unauthenticated-reads", false, "let requests without a token read blobs and the refs of --anonymous-scope")
	fs.BoolVar(&o.anonWrites, "allow-unauthenticated-writes", false, "let requests without a token write blobs and the refs of --anonymous-scope (a laptop, a test)")
	fs.StringVar(&o.anonScope, "anonymous-scope", server.DefaultAnonymousScope, "the scope of requests without a token")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; with --tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "the private key of --tls-cert (PEM)")
	fs.Var(cli.SizeValue(&o.maxBodySize), "max-body-size", "the largest blob a client may put (4GiB, 500MB)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 5*time.Minute, "on SIGTERM, how long requests in flight may take to finish")
	fs.Var(cli.AgeValue(&o.ttl), "ttl", "evict the entries neither restored nor saved for this long (7d, 36h; 0: no age rule)")
	fs.Var(cli.SizeValue(&o.maxSize), "max-size", "evict the least recently used entries while the store holds more (10GiB; 0: no size rule)")
	fs.DurationVar(&o.gcInterval, "gc-interval", time.Hour, "how often to evict, and the lease one replica holds to do it (0: never evict)")
	fs.DurationVar(&o.gcGrace, "gc-grace", gc.DefaultGrace, "how long a blob no entry names is kept (a save may be uploading it)")
	fs.BoolVar(&o.metrics, "metrics", true, "answer Prometheus metrics at GET /metrics, without a token (--metrics=false: not served)")
	fs.StringVar(&o.logFormat, "log-format", "json", "the logs on stderr, one line per request and per event: json or text")
	fs.IntVar(&o.maxUploads, "max-concurrent-uploads", server.DefaultMaxConcurrentUploads, "blob uploads received at once; one more gets 429 with Retry-After: 1 (0: no limit)")
	fs.BoolVar(&o.statusPage, "status-page", true, "serve a status page at / (lists every entry's key and size to whoever reaches the port, no token asked)")
	fs.BoolVar(&o.tokenReview, "token-review", false, "check bearer tokens that are not static tokens with a Kubernetes TokenReview; --tokens-file's serviceAccounts give their scopes")
	fs.StringVar(&o.tokenAudience, "token-audience", server.DefaultTokenAudience, "the audience a ServiceAccount token must be bound to (with --token-review)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "a kubeconfig for TokenReview (default: the pod's in-cluster ServiceAccount)")
	fs.BoolVar(&o.gha, "gha", true, "serve the GitHub Actions cache protocol (v1 and v2) for BuildKit's type=gha and @actions/cache (docs/GHA.md)")
	fs.StringVar(&o.ghaKeyFile, "gha-signing-key-file", "", "a file of at least 32 bytes that signs the GHA runtime tokens and blob URLs, shared by every replica (default: a random key per process)")
	fs.DurationVar(&o.ghaTokenTTL, "gha-token-ttl", gha.DefaultTokenTTL, "how long a GHA runtime token from POST /v1/gha/token lasts")
	fs.DurationVar(&o.ghaReservation, "gha-reservation-ttl", gha.DefaultReservationTTL, "how long an unfinished GHA upload keeps its key reserved before it and its parts are removed")
	fs.StringVar(&o.ghaURL, "gha-url", "", "the URL clients reach this server at, for the GHA blob URLs it hands out (default: the scheme and Host of each request)")
	return cmd
}

// newLogger is the logger of --log-format on stderr, at info level.
func newLogger(stderr io.Writer, format string) (*slog.Logger, error) {
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, nil)), nil
	case "text":
		return slog.New(slog.NewTextHandler(stderr, nil)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use json or text", format)
}

// printf is the printf-style log of the lower layers (Logf) as lg's lines:
// a "warning: " line at warn level, the rest at info.
func printf(lg *slog.Logger) func(format string, args ...any) {
	return func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		level := slog.LevelInfo
		if m, ok := strings.CutPrefix(msg, "warning: "); ok {
			msg, level = m, slog.LevelWarn
		}
		lg.Log(context.Background(), level, msg)
	}
}

// run serves until ctx is done, then stops taking connections and waits
// (up to o.shutdownTimeout) for the requests in flight.
func run(ctx context.Context, o options, lg *slog.Logger, ready func(addr string)) error {
	logf := printf(lg)
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	if o.maxUploads < 0 {
		return usageError{errors.New("--max-concurrent-uploads must not be negative (0: no limit)")}
	}
	auth, err := newAuthenticator(o, logf)
	if err != nil {
		return err
	}
	st, err := all.Mux().Open(ctx, o.storeURL, store.Options{Insecure: o.insecure, Logf: logf})
	if err != nil {
		return err
	}
	uploads := o.maxUploads
	if uploads == 0 {
		uploads = -1 // no limit
	}
	metrics := server.NewMetrics()
	collector, err := newCollector(st, o, logf, metrics)
	if err != nil {
		return err
	}
	srv, err := server.New(st, server.Options{
		Authenticator:              auth,
		AnonymousScope:             o.anonScope,
		AllowUnauthenticatedReads:  o.anonReads,
		AllowUnauthenticatedWrites: o.anonWrites,
		MaxBodySize:                o.maxBodySize,
		Logf:                       logf,
		AccessLog:                  lg,
		DisableMetrics:             !o.metrics,
		MaxConcurrentUploads:       uploads,
		Metrics:                    metrics,
		StatusPage:                 o.statusPage,
		Collector:                  collector,
		InternalRef:                gha.Internal,
		NameRef:                    gha.NameRef,
	})
	if err != nil {
		return usageError{err}
	}
	expire, err := mountGHA(st, srv, o, logf)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(lg.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	scheme := "http"
	if o.tlsCert != "" {
		scheme = "https"
	}
	logf("serving %s on %s://%s", st, scheme, ln.Addr())
	if ready != nil {
		ready(ln.Addr().String())
	}
	gcDone := make(chan struct{})
	gcCtx, stopGC := context.WithCancel(ctx)
	defer func() { stopGC(); <-gcDone }()
	go func() {
		defer close(gcDone)
		if collector != nil {
			collector.Run(gcCtx)
		}
	}()
	expireDone := make(chan struct{})
	defer func() { stopGC(); <-expireDone }()
	go func() {
		defer close(expireDone)
		if expire != nil {
			expire(gcCtx)
		}
	}()
	errc := make(chan error, 1)
	go func() {
		if o.tlsCert != "" {
			errc <- hs.ServeTLS(ln, o.tlsCert, o.tlsKey)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logf("stopping: finishing the requests in flight (at most %s)", o.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("stopping: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logf("stopped")
	return nil
}

// newCollector is the GC of st that the flags ask for, or nil when they
// ask for none or the store cannot delete (a warning says so).
func newCollector(st store.Store, o options, logf func(string, ...any), m *server.Metrics) (*server.Collector, error) {
	switch {
	case o.gcInterval < 0 || o.ttl < 0 || o.maxSize < 0 || o.gcGrace < 0:
		return nil, usageError{errors.New("--gc-interval, --ttl, --max-size and --gc-grace must not be negative")}
	case o.gcInterval == 0 || o.ttl == 0 && o.maxSize == 0:
		logf("eviction off (no --ttl or --max-size, or --gc-interval 0)")
		return nil, nil
	}
	if _, ok := store.As[store.Deleter](st); !ok {
		logf("warning: eviction off: %s cannot delete entries", st)
		return nil, nil
	}
	if _, ok := store.As[store.MetaStore](st); !ok {
		logf("warning: %s keeps no records: entries are evicted by when they were saved, not restored, and every replica collects (docs/SERVE.md)", st)
	}
	host, _ := os.Hostname()
	var id [4]byte
	rand.Read(id[:])
	c, err := server.NewCollector(st, server.CollectorOptions{
		TTL:      o.ttl,
		MaxSize:  o.maxSize,
		Grace:    o.gcGrace,
		Interval: o.gcInterval,
		Holder:   fmt.Sprintf("%s-%x", host, id),
		Logf:     logf,
		Metrics:  m,
		Internal: gha.Internal,
	})
	if err != nil {
		return nil, err
	}
	logf("evicting every %s: entries unused for %s (0: no age rule), least recently used over %d bytes (0: no size rule), blobs unnamed for %s", o.gcInterval, o.ttl, o.maxSize, o.gcGrace)
	return c, nil
}
