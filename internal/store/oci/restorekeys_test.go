package oci_test

import (
	"fmt"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

// TestRestoreKeyCost measures what resolving a restore key of 1,000
// entries in a registry costs (docs/BENCHMARKS.md), counting the requests
// at a proxy: the tags, the times manifest and a few manifests when the
// saves came one at a time; more when saves raced to update the times
// manifest (8 at a time, each losing some updates), whose entries without
// a time are read whole.
func TestRestoreKeyCost(t *testing.T) {
	if testing.Short() {
		t.Skip("puts 1,000 entries")
	}
	host := registry(t, false)
	for _, parallel := range []int{1, 8} {
		t.Run(fmt.Sprint(parallel), func(t *testing.T) {
			proxy := faultproxy.New(t, "http://"+host)
			st := store.Checked(store.WithRetries(openStore(t, proxy.Addr()), store.Options{}))
			all, lazy := storetest.RestoreKeyCost(t, st, 1000, parallel, func() int { return proxy.Count("", "") })
			t.Logf("oci (distribution), 1,000 entries saved %d at a time: reading every candidate %v; lazily %v", parallel, all, lazy)
			if parallel == 1 && (lazy.Lists != 1 || lazy.Reads > storetest.MaxLazyReads || lazy.Requests > lazy.Reads+3) {
				t.Fatalf("Newest of 1,000 entries cost %v, want 1 listing (tags and times), at most %d reads", lazy, storetest.MaxLazyReads)
			}
		})
	}
}
