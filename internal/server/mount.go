package server

import (
	"context"
	"fmt"
	"net/http"
)

// Handle mounts another front end's route on the server's mux (the GitHub
// Actions cache, internal/server/gha), before the server serves: its
// requests are counted, logged and guarded like the API's.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Authenticate tells who sent r, as the API's own routes do: the
// Authenticator's principal for credentials, else the anonymous principal
// (which reads and writes only what the options allow: maybe nothing).
func (s *Server) Authenticate(r *http.Request) (*Principal, error) {
	if s.o.Authenticator != nil {
		p, err := s.o.Authenticator.Authenticate(r)
		if err != nil || p != nil {
			return p, err
		}
	} else if _, has := BearerToken(r); has {
		return nil, fmt.Errorf("%w: this server takes no tokens", ErrUnauthenticated)
	}
	anon := s.anon
	return &anon, nil
}

// RecordUse records that the entry of backing key was restored now, for
// the GC, as a ref read records it (at most every Options.RecordUseEvery).
func (s *Server) RecordUse(ctx context.Context, key string) { s.used.touch(ctx, key) }

// ObserveGHALookup counts a lookup of the GitHub Actions cache by a caller
// whose first read scope is scope: in its own series
// (tekton_cache_gha_lookups_total) and in the status page's hit rate.
func (s *Server) ObserveGHALookup(scope string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	s.m.ghaLookups.WithLabelValues(s.m.scopes.label(scope), result).Inc()
	s.countLookup(scope, hit)
}
