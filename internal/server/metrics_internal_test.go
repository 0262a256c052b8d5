package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// TestScopeLabelsCapped: past maxScopeLabels distinct scopes, lookups count
// under "other", so that no principal list grows the series without bound;
// the scopes seen first keep their own.
func TestScopeLabelsCapped(t *testing.T) {
	s, err := New(memory.NewStore(t.Name()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxScopeLabels + 50 {
		s.observeLookup(fmt.Sprintf("scope-%d", i), i%2 == 0)
	}
	s.observeLookup("scope-0", true)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", MetricsPath, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	m := testserver.ParseMetrics(t, rec.Body.String())
	scopes := map[string]bool{}
	for series := range m {
		if rest, ok := strings.CutPrefix(series, "tekton_cache_ref_lookups_total{"); ok {
			scopes[rest[strings.Index(rest, "scope="):]] = true
		}
	}
	if len(scopes) != maxScopeLabels+1 {
		t.Errorf("%d scope labels, want %d and other", len(scopes), maxScopeLabels)
	}
	if got := m[`tekton_cache_ref_lookups_total{result="hit",scope="scope-0"}`]; got != 2 {
		t.Errorf("scope-0 hits = %v, want 2", got)
	}
	if got := m[`tekton_cache_ref_lookups_total{result="hit",scope="other"}`] + m[`tekton_cache_ref_lookups_total{result="miss",scope="other"}`]; got != 50 {
		t.Errorf("lookups past the cap = %v, want 50 under other", got)
	}
}
