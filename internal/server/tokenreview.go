package server

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// DefaultTokenAudience is the audience a ServiceAccount token must be
// bound to unless TokenReviewOptions.Audience says otherwise.
const DefaultTokenAudience = "tekton-cache"

// The TokenReview cache: how long an answer is kept, and how many.
const (
	// ReviewPositiveTTL bounds how long an accepted token is taken
	// without asking again (less when the token expires sooner): a
	// revoked token is refused at most this late.
	ReviewPositiveTTL = time.Minute
	// ReviewNegativeTTL is how long a refused token is refused without
	// asking again.
	ReviewNegativeTTL = 10 * time.Second
	// DefaultReviewCacheSize is how many answers are kept; past it the
	// oldest goes.
	DefaultReviewCacheSize = 4096
	// DefaultReviewTimeout bounds one TokenReview.
	DefaultReviewTimeout = 10 * time.Second
)

// maxReviewedToken is the longest token sent to a TokenReview: a
// projected ServiceAccount token is about a kilobyte.
const maxReviewedToken = 16 << 10

// TokenReviewer creates TokenReviews: client-go's
// AuthenticationV1().TokenReviews() (real, or its fake in tests).
type TokenReviewer interface {
	Create(ctx context.Context, tr *authnv1.TokenReview, opts metav1.CreateOptions) (*authnv1.TokenReview, error)
}

// TokenReviewOptions configure a TokenReview authenticator.
type TokenReviewOptions struct {
	// Tokens are the static tokens, checked first, and the
	// serviceAccounts entries that say what each ServiceAccount may do
	// (at least one). Required.
	Tokens *Tokens
	// Audience is the audience a token must be bound to; empty:
	// DefaultTokenAudience.
	Audience string
	// CacheSize bounds the answers kept; 0: DefaultReviewCacheSize.
	CacheSize int
	// Timeout bounds one TokenReview; 0: DefaultReviewTimeout.
	Timeout time.Duration
	// Logf receives a line per TokenReview that failed (never a token);
	// nil: nothing is logged.
	Logf func(format string, args ...any)
	// Now is the cache's clock (default time.Now).
	Now func() time.Time
}

// TokenReview is an Authenticator of Kubernetes ServiceAccount tokens: a
// bearer token that is not one of the static tokens is sent to the API
// server in a TokenReview (authentication.k8s.io/v1) for the audience; an
// authenticated ServiceAccount gets the scopes of its serviceAccounts
// entry. Answers are kept briefly, by the sha256 of the token.
type TokenReview struct {
	client TokenReviewer
	o      TokenReviewOptions
	cache  *reviewCache
	flight singleflight.Group
}

var _ Authenticator = (*TokenReview)(nil)

// NewTokenReview returns the TokenReview authenticator over client.
func NewTokenReview(client TokenReviewer, o TokenReviewOptions) (*TokenReview, error) {
	if o.Tokens == nil || o.Tokens.sas.Len() == 0 {
		return nil, errors.New("TokenReview needs serviceAccounts entries in the tokens file: which ServiceAccount writes and reads which scopes (docs/HTTP.md)")
	}
	if o.Audience == "" {
		o.Audience = DefaultTokenAudience
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultReviewCacheSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultReviewTimeout
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &TokenReview{client: client, o: o, cache: newReviewCache(o.CacheSize)}, nil
}

// Authenticate implements Authenticator: a static token first (in
// constant time), then a TokenReview, or its answer kept from before.
func (a *TokenReview) Authenticate(r *http.Request) (*Principal, error) {
	tok, err := credential(r)
	if tok == "" || err != nil {
		return nil, err
	}
	if p := a.o.Tokens.lookup(tok); p != nil {
		return p, nil
	}
	if !looksLikeJWT(tok) {
		// No ServiceAccount token: not worth asking the API server.
		return nil, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	sum := sha256.Sum256([]byte(tok))
	res, ok := a.cache.get(sum, a.o.Now())
	if !ok {
		v, err, _ := a.flight.Do(string(sum[:]), func() (any, error) {
			if res, ok := a.cache.get(sum, a.o.Now()); ok {
				return res, nil
			}
			return a.review(r.Context(), tok, sum)
		})
		if err != nil {
			return nil, err
		}
		res = v.(reviewResult)
	}
	if res.err != nil {
		return nil, res.err
	}
	return a.o.Tokens.sas.principal(res.username)
}

// reviewResult is what a TokenReview said of a token: the ServiceAccount's
// username, or why the token is refused.
type reviewResult struct {
	username string
	err      error
}

// review asks the API server about tok and keeps the answer, unless the
// API server did not give one (ErrUnavailable, not kept).
func (a *TokenReview) review(ctx context.Context, tok string, sum [sha256.Size]byte) (reviewResult, error) {
	// The request waiting may go away; the others sharing this review
	// still want its answer.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.o.Timeout)
	defer cancel()
	tr, err := a.client.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: tok, Audiences: []string{a.o.Audience}}}, metav1.CreateOptions{})
	if err == nil && tr == nil {
		err = errors.New("an empty answer")
	}
	if err != nil {
		hint := ""
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			hint = " (the server's ServiceAccount needs the ClusterRole system:auth-delegator: docs/SERVE.md)"
		}
		a.o.Logf("tokenreview: %s%s", storeerr.Cut(storeerr.Scrub(storeerr.OneLine(err.Error()), tok), 500), hint)
		return reviewResult{}, fmt.Errorf("%w: the Kubernetes API did not answer the TokenReview of the token; try again", ErrUnavailable)
	}
	now := a.o.Now()
	st := tr.Status
	var res reviewResult
	switch {
	case !st.Authenticated:
		why := "expired, revoked or not bound to audience " + fmt.Sprintf("%q", a.o.Audience)
		if st.Error != "" {
			// The API server's own words ("invalid bearer token"), less
			// the token should they hold it.
			why = storeerr.Cut(strings.ReplaceAll(storeerr.OneLine(st.Error), tok, "[the token]"), 200)
		}
		res.err = fmt.Errorf("%w: the Kubernetes API refused the token: %s", ErrUnauthenticated, why)
	case !slices.Contains(st.Audiences, a.o.Audience):
		res.err = fmt.Errorf("%w: the token is not bound to audience %q (project it with that audience: docs/SERVE.md)", ErrUnauthenticated, a.o.Audience)
	default:
		if _, _, ok := serviceAccountOf(st.User.Username); !ok {
			res.err = fmt.Errorf("%w: the token is %q's, not a ServiceAccount's", ErrUnauthenticated, storeerr.Cut(strings.ReplaceAll(st.User.Username, tok, "[the token]"), 200))
			break
		}
		res.username = st.User.Username
	}
	ttl := ReviewNegativeTTL
	if res.err == nil {
		ttl = ReviewPositiveTTL
		if exp, ok := jwtExpiry(tok); ok {
			ttl = min(ttl, exp.Sub(now))
		}
	}
	if ttl > 0 {
		a.cache.put(sum, res, now.Add(ttl))
	}
	return res, nil
}

// looksLikeJWT tells whether tok has the shape of a JWT (three base64url
// parts), which every ServiceAccount token has.
func looksLikeJWT(tok string) bool {
	if len(tok) > maxReviewedToken {
		return false
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.ContainsFunc(p, func(c rune) bool {
			return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '=')
		}) {
			return false
		}
	}
	return true
}

// jwtExpiry is the exp claim of a JWT the API server authenticated (so
// its signature, which covers exp, was checked).
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(int64(claims.Exp), 0), true
}

// ServiceAccounts say what Kubernetes ServiceAccounts may do: an entry
// names NAMESPACE/NAME, or NAMESPACE/* for every ServiceAccount of the
// namespace; the exact entry wins over the namespace's.
type ServiceAccounts struct {
	exact map[string]Principal // by "NAMESPACE/NAME"
	any   map[string]Principal // by "NAMESPACE"
}

// Len is the number of entries.
func (s *ServiceAccounts) Len() int { return len(s.exact) + len(s.any) }

// add adds the entry name with the scopes of p.
func (s *ServiceAccounts) add(name string, p Principal) error {
	ns, sa, ok := strings.Cut(name, "/")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || sa != "*" && len(validation.IsDNS1123Subdomain(sa)) > 0 {
		return errors.New("name is not NAMESPACE/NAME or NAMESPACE/* (a Kubernetes namespace and ServiceAccount)")
	}
	m := &s.exact
	key := name
	if sa == "*" {
		m, key = &s.any, ns
	}
	if *m == nil {
		*m = map[string]Principal{}
	}
	if _, dup := (*m)[key]; dup {
		return errors.New("the name is used twice")
	}
	(*m)[key] = p
	return nil
}

// serviceAccountOf splits a ServiceAccount's username,
// system:serviceaccount:NAMESPACE:NAME.
func serviceAccountOf(username string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(username, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return ns, name, true
}

// principal is the principal of the ServiceAccount username, named by it;
// one no entry names is refused (ErrForbidden).
func (s *ServiceAccounts) principal(username string) (*Principal, error) {
	ns, name, ok := serviceAccountOf(username)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a ServiceAccount", ErrUnauthenticated, username)
	}
	p, ok := s.exact[ns+"/"+name]
	if !ok {
		p, ok = s.any[ns]
	}
	if !ok {
		return nil, fmt.Errorf("%w: ServiceAccount %s/%s has no serviceAccounts entry in the tokens file (add %s/%s or %s/*)", ErrForbidden, ns, name, ns, name, ns)
	}
	p.Name = username
	return &p, nil
}

// reviewCache keeps TokenReview answers by the sha256 of the token until
// they expire, at most max of them: past it the oldest goes.
type reviewCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *cached, oldest first
	byKey map[[sha256.Size]byte]*list.Element
}

type cached struct {
	sum     [sha256.Size]byte
	res     reviewResult
	expires time.Time
}

func newReviewCache(n int) *reviewCache {
	return &reviewCache{max: n, order: list.New(), byKey: map[[sha256.Size]byte]*list.Element{}}
}

// get is the answer kept for sum, if it has not expired at now.
func (c *reviewCache) get(sum [sha256.Size]byte, now time.Time) (reviewResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[sum]
	if !ok {
		return reviewResult{}, false
	}
	v := e.Value.(*cached)
	if !now.Before(v.expires) {
		c.order.Remove(e)
		delete(c.byKey, sum)
		return reviewResult{}, false
	}
	return v.res, true
}

// put keeps res for sum until expires.
func (c *reviewCache) put(sum [sha256.Size]byte, res reviewResult, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[sum]; ok {
		c.order.Remove(e)
	}
	c.byKey[sum] = c.order.PushBack(&cached{sum: sum, res: res, expires: expires})
	for c.order.Len() > c.max {
		oldest := c.order.Front()
		c.order.Remove(oldest)
		delete(c.byKey, oldest.Value.(*cached).sum)
	}
}

// len is the number of answers kept (for tests).
func (c *reviewCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
