package cli

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// TestStallTimeoutFlag: --stall-timeout cuts a stalled request and retries
// it (the fetch hits); with it off (0), --idle-timeout gives up on the
// command instead (a warning naming --idle-timeout).
func TestStallTimeoutFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry")
	}
	proxy := faultproxy.New(t, "http://"+testserver.Registry(t, "", ""))
	wd, folder := workspace(t)
	res := t.TempDir()
	src := "oci://" + proxy.Addr() + "/team/cache:go-{{hash}}"
	common := []string{"--workingdir", wd, "--folder", folder, "--results-dir", res, "--insecure"}
	if r := cache(t, append([]string{"upload", "--target", src}, common...)...); r.code != 0 || readResult(t, res, "status") != "saved" {
		t.Fatalf("upload: %+v", r)
	}
	stallBlob := func() {
		proxy.Clear()
		proxy.Add(faultproxy.Rule{Method: http.MethodGet, Path: "/blobs/sha256:", Fault: faultproxy.Stall})
	}

	stallBlob()
	os.RemoveAll(folder)
	start := time.Now()
	r := cache(t, append([]string{"fetch", "--source", src, "--stall-timeout", "1s", "--idle-timeout", "0"}, common...)...)
	if r.code != 0 || readResult(t, res, "status") != "hit" || !strings.Contains(r.stderr, "retrying") {
		t.Fatalf("fetch with --stall-timeout 1s over one stalled request: want a hit after a retry: %+v", r)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the stalled request was not cut after 1 s: the fetch took %s", took)
	}

	stallBlob()
	os.RemoveAll(folder)
	r = cache(t, append([]string{"fetch", "--source", src, "--stall-timeout", "0", "--idle-timeout", "2s"}, common...)...)
	if r.code != 0 || readResult(t, res, "status") != "error" || !strings.Contains(r.stderr, "--idle-timeout") {
		t.Fatalf("fetch with --stall-timeout 0 --idle-timeout 2s over a stalled request: want a warning naming --idle-timeout: %+v", r)
	}
}
