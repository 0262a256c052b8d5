package oci_test

import (
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

// TestRestoreKeyCost measures what resolving a restore key of 1,000
// entries in a registry costs (docs/BENCHMARKS.md), counting the requests
// at a proxy.
func TestRestoreKeyCost(t *testing.T) {
	if testing.Short() {
		t.Skip("puts 1,000 entries")
	}
	proxy := faultproxy.New(t, "http://"+registry(t, false))
	st := store.Checked(store.WithRetries(openStore(t, proxy.Addr()), store.Options{}))
	all, lazy := storetest.RestoreKeyCost(t, st, 1000, func() int { return proxy.Count("", "") })
	t.Logf("oci (distribution), 1,000 entries: reading every candidate %v; lazily %v", all, lazy)
}
