package cli

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// TestHTTPStore runs cache upload and cache fetch against a cache server
// on 127.0.0.1 (http://127.0.0.1:PORT/go-{{hash}}), with the token of
// CACHE_TOKEN_FILE; without a token, one warning that says what to set.
func TestHTTPStore(t *testing.T) {
	const tok = "cli-http-token-0c4b7e"
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	auth, err := server.ParseTokens(fmt.Appendf(nil, "tokens: [{name: ci, sha256: %s, write: main}]", digest.FromBytes([]byte(tok)).Hex()))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(store.NewObjectStore(b), server.Options{Authenticator: auth})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	wd, folder := workspace(t)
	res := t.TempDir()
	src := ts.URL + "/go-{{hash}}"
	args := func(verb string) []string {
		flag := "--source"
		if verb == "upload" {
			flag = "--target"
		}
		return []string{verb, flag, src, "--restore-keys", "go-", "--workingdir", wd, "--folder", folder, "--results-dir", res}
	}
	if r := cache(t, args("upload")...); r.code != 0 || !strings.Contains(r.stderr, "warning:") || !strings.Contains(r.stderr, "CACHE_TOKEN") {
		t.Fatalf("upload without a token: want one warning that names CACHE_TOKEN: %+v", r)
	}

	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte(tok), 0o600)
	want := testtree.Snapshot(t, folder)
	// The flag, then the variable the StepActions set.
	if r := cache(t, append(args("upload"), "--token-file", file)...); r.code != 0 || !strings.Contains(r.stderr, "saved go-") {
		t.Fatalf("upload with --token-file: %+v", r)
	}
	t.Setenv("CACHE_TOKEN_FILE", file)
	os.RemoveAll(folder)
	if r := cache(t, args("fetch")...); r.code != 0 || readResult(t, res, "fetched") != "true" {
		t.Fatalf("fetch: %+v", r)
	}
	testtree.Equal(t, want, testtree.Snapshot(t, folder, ".tekton-cache-state"))
	if r := cache(t, args("fetch")...); r.code != 0 || readResult(t, res, "store") != ts.URL {
		t.Fatalf("fetch again: %+v, store %q", r, readResult(t, res, "store"))
	}
}
