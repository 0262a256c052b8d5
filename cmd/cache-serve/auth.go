package main

import (
	"context"
	"errors"
	"fmt"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tekton-cache/tekton-cache/internal/server"
)

// newAuthenticator is the Authenticator the flags ask for: none, the
// tokens file, or the tokens file then TokenReview. Every combination
// that cannot work is a usageError.
func newAuthenticator(o options, logf func(string, ...any)) (server.Authenticator, error) {
	if o.kubeconfig != "" && !o.tokenReview {
		return nil, usageError{errors.New("--kubeconfig is used only with --token-review: pass --token-review too, or drop --kubeconfig")}
	}
	if o.tokensFile == "" {
		if o.tokenReview {
			return nil, usageError{errors.New("--token-review needs --tokens-file with serviceAccounts entries: which ServiceAccount writes and reads which scopes (docs/HTTP.md)")}
		}
		if !o.anonReads && !o.anonWrites {
			logf("warning: no --tokens-file and no --allow-unauthenticated-*: every request will be refused")
		}
		return nil, nil
	}
	t, err := server.LoadTokens(o.tokensFile)
	if err != nil {
		return nil, usageError{err}
	}
	sas := t.ServiceAccounts().Len()
	logf("%d tokens and %d serviceAccounts entries from %s", t.Len(), sas, o.tokensFile)
	if !o.tokenReview {
		if sas > 0 {
			return nil, usageError{fmt.Errorf("%s has serviceAccounts entries, which only --token-review reads: pass --token-review (CACHE_TOKEN_REVIEW=true) or remove them", o.tokensFile)}
		}
		return t, nil
	}
	if sas == 0 {
		return nil, usageError{fmt.Errorf("--token-review: %s has no serviceAccounts entries, so every ServiceAccount would be refused: add some (docs/HTTP.md)", o.tokensFile)}
	}
	if o.tokenAudience == "" {
		return nil, usageError{errors.New("--token-review needs a --token-audience (default tekton-cache): the audience of the projected tokens")}
	}
	cfg, err := kubeConfig(o.kubeconfig)
	if err != nil {
		return nil, usageError{err}
	}
	cfg.UserAgent = "tekton-cache/cache-serve"
	// The answers are kept for a minute: a burst of new tokens (many
	// pipelines starting) is all the API server sees.
	cfg.QPS, cfg.Burst = 50, 100
	client, err := newTokenReviews(cfg)
	if err != nil {
		return nil, usageError{fmt.Errorf("--token-review: %w", err)}
	}
	a, err := server.NewTokenReview(client, server.TokenReviewOptions{Tokens: t, Audience: o.tokenAudience, Logf: logf})
	if err != nil {
		return nil, usageError{err}
	}
	logf("TokenReview on: ServiceAccount tokens bound to audience %q are checked by %s", o.tokenAudience, cfg.Host)
	return a, nil
}

// kubeConfig is the client configuration of the Kubernetes API: the
// kubeconfig file at path, or the pod's own ServiceAccount when path is
// empty.
func kubeConfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("--token-review: no in-cluster Kubernetes configuration (%w): run in a pod, or pass --kubeconfig", err)
	}
	return cfg, nil
}

// tokenReviews is a client of the TokenReview API (authentication.k8s.io/v1)
// alone. client-go's typed client would do the same, but its package
// registers the types of every API group: 20 MB more of cache-serve.
type tokenReviews struct{ rc *rest.RESTClient }

var _ server.TokenReviewer = (*tokenReviews)(nil)

func newTokenReviews(cfg *rest.Config) (*tokenReviews, error) {
	scheme := runtime.NewScheme()
	if err := authnv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &authnv1.SchemeGroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &tokenReviews{rc: rc}, nil
}

// Create implements server.TokenReviewer.
func (c *tokenReviews) Create(ctx context.Context, tr *authnv1.TokenReview, opts metav1.CreateOptions) (*authnv1.TokenReview, error) {
	out := &authnv1.TokenReview{}
	err := c.rc.Post().Resource("tokenreviews").VersionedParams(&opts, metav1.ParameterCodec).Body(tr).Do(ctx).Into(out)
	return out, err
}
