// Package depcheck holds the layering test: which of the module's
// packages may depend on which (docs/ARCHITECTURE.md). It reads the
// dependency graph with `go list`, so it needs no linter installed.
package depcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

// m is the module path, with a trailing slash: m + "internal/store".
const m = "github.com/tekton-cache/tekton-cache/"

// cloudSDKs are the cloud SDKs (and gocloud), which only store backends
// import.
var cloudSDKs = []string{"cloud.google.com/...", "github.com/aws/...", "github.com/Azure/...", "gocloud.dev/...", "google.golang.org/api/..."}

// rule says that no package matching pkgs (other than those in but)
// depends, directly or not, on a package matching forbid (other than
// those in allow). A pattern "p/..." matches p and every package below it;
// any other pattern matches itself only.
type rule struct {
	pkgs   string
	but    []string
	forbid []string
	allow  []string
	// future marks a rule about packages that may not exist yet.
	future bool
}

// rules are the layering of docs/ARCHITECTURE.md, one line each: format,
// digest and humanize are leaves; archive and cachekey know no store, engine, cli
// or network; the store's root knows only the format; no store package
// knows the engine or the cli; the engine (and prune's gc) reaches stores
// through the store interface only; only the commands open store/all; the
// binary carries no Tekton, Kubernetes, Prometheus or server code; the HTTP API's wire
// (httpapi) is a leaf that its client and server share, and the client
// never reaches the server; Kubernetes is cache-serve's and the server's
// alone (TokenReview), the server knowing its types, not client-go, and
// nothing pulls in client-go's clientset (every API group's types); the
// GitHub Actions cache's client library is a test peer only.
var rules = []rule{
	{pkgs: m + "internal/format", forbid: []string{m + "..."}, allow: []string{m + "internal/digest"}},
	{pkgs: m + "internal/digest", forbid: []string{m + "..."}},
	{pkgs: m + "internal/archive", forbid: append([]string{m + "internal/store/...", m + "internal/engine/...", m + "internal/cli/...", "net/http"}, cloudSDKs...)},
	{pkgs: m + "internal/cachekey", forbid: append([]string{m + "internal/store/...", m + "internal/engine/...", m + "internal/cli/...", "net/http"}, cloudSDKs...)},
	{pkgs: m + "internal/store", forbid: []string{m + "..."}, allow: []string{m + "internal/digest", m + "internal/format", m + "internal/store/storeerr"}},
	{pkgs: m + "internal/store/...", forbid: []string{m + "internal/engine/...", m + "internal/cli/..."}},
	{pkgs: m + "internal/engine", forbid: []string{m + "internal/store/...", m + "internal/cli/..."}, allow: []string{m + "internal/store", m + "internal/store/storeerr"}},
	{pkgs: m + "internal/gc", forbid: []string{m + "internal/store/...", m + "internal/cli/..."}, allow: []string{m + "internal/store", m + "internal/store/storeerr"}},
	{pkgs: m + "...", but: []string{m + "cmd/...", m + "internal/cli", m + "internal/store/all"}, forbid: []string{m + "internal/store/all"}},
	{pkgs: m + "internal/lint", forbid: []string{m + "..."}},
	{pkgs: m + "internal/inject", forbid: []string{m + "..."}, allow: []string{m + "tekton"}},
	{pkgs: m + "tekton", forbid: []string{m + "..."}},
	{pkgs: m + "internal/httpapi", forbid: []string{m + "..."}, allow: []string{m + "internal/digest"}},
	{pkgs: m + "internal/humanize", forbid: []string{m + "..."}},
	{pkgs: m + "internal/store/httpstore", forbid: []string{m + "internal/server/..."}},
	{pkgs: m + "internal/server/...", forbid: []string{m + "internal/store/...", m + "internal/engine/...", m + "internal/archive/...", m + "internal/cli/..."}, allow: []string{m + "internal/store", m + "internal/store/storeerr"}},
	{pkgs: m + "internal/bake/...", forbid: []string{m + "internal/store/...", m + "internal/engine/...", m + "internal/cli/..."}, allow: []string{m + "internal/store", m + "internal/store/storeerr"}},
	// The gs:// store speaks the JSON API through its own gocloud driver:
	// cloud.google.com/go/storage links gRPC's xDS, Envoy's protos and
	// OpenTelemetry's exporters, whose package init cost every run of
	// cache 5-7 ms (docs/BENCHMARKS.md).
	{pkgs: m + "...", forbid: []string{"cloud.google.com/go/storage/...", "gocloud.dev/blob/gcsblob", "google.golang.org/grpc/xds/..."}},
	{pkgs: m + "cmd/cache", forbid: []string{"github.com/tektoncd/...", "knative.dev/...", "k8s.io/...", "sigs.k8s.io/...", "github.com/prometheus/...", m + "internal/server/...", m + "internal/delayline"}},
	{pkgs: m + "...", but: []string{m + "cmd/cache-serve", m + "internal/server/..."}, forbid: []string{"k8s.io/...", "sigs.k8s.io/..."}},
	{pkgs: m + "internal/server/...", forbid: []string{"k8s.io/client-go/..."}},
	{pkgs: m + "...", forbid: []string{"k8s.io/client-go/kubernetes/..."}},
	// go-actions-cache (BuildKit's client of the GitHub Actions cache) is a
	// test peer only: what drives it in tests, nothing that ships.
	{pkgs: m + "...", but: []string{m + "internal/server/gha/ghatest"}, forbid: []string{"github.com/tonistiigi/go-actions-cache"}},
}

func match(pattern, pkg string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

func matchAny(patterns []string, pkg string) bool {
	for _, p := range patterns {
		if match(p, pkg) {
			return true
		}
	}
	return false
}

// pkg is a package as `go list` gives it: its imports, and its
// dependencies, direct or not (not its tests').
type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// graph is every package of the module and every package they depend
// on, by import path.
func graph(t *testing.T) map[string]pkg {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to read the dependency graph: %v", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(goTool, "list", "-deps", "-json=ImportPath,Imports,Deps", m+"...")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	g := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		g[p.ImportPath] = p
	}
	return g
}

// violation is a package with a dependency a rule forbids.
type violation struct{ pkg, dep string }

// violations lists r's violations in g, sorted; matched tells whether any
// package is subject to r.
func (r rule) violations(g map[string]pkg) (found []violation, matched bool) {
	for name, p := range g {
		if !match(r.pkgs, name) || matchAny(r.but, name) {
			continue
		}
		matched = true
		for _, d := range p.Deps {
			if matchAny(r.forbid, d) && !matchAny(r.allow, d) && d != name {
				found = append(found, violation{name, d})
			}
		}
	}
	sort.Slice(found, func(i, j int) bool {
		return found[i].pkg+" "+found[i].dep < found[j].pkg+" "+found[j].dep
	})
	return found, matched
}

// short is an import path without the module's prefix.
func short(p string) string { return strings.TrimPrefix(p, m) }

// chain is the shortest import chain from one package to another,
// "a -> b -> c", the module's prefix left out.
func chain(g map[string]pkg, from, to string) string {
	prev := map[string]string{from: ""}
	for queue := []string{from}; len(queue) > 0; queue = queue[1:] {
		for _, i := range g[queue[0]].Imports {
			if _, seen := prev[i]; seen {
				continue
			}
			prev[i] = queue[0]
			if i == to {
				var path []string
				for q := to; q != ""; q = prev[q] {
					path = append([]string{short(q)}, path...)
				}
				return strings.Join(path, " -> ")
			}
			queue = append(queue, i)
		}
	}
	return "no import chain found"
}

func TestLayering(t *testing.T) {
	g := graph(t)
	for _, r := range rules {
		found, matched := r.violations(g)
		if !matched && !r.future {
			t.Errorf("rule for %s: no such package (a typo, or a package that moved?)", short(r.pkgs))
		}
		for _, v := range found {
			t.Errorf("%s must not depend on %s (rule for %s): %s", short(v.pkg), short(v.dep), short(r.pkgs), chain(g, v.pkg, v.dep))
		}
	}
}

// TestRules checks the matching on a made-up graph, so that a rule that
// could never fire is caught here rather than trusted.
func TestRules(t *testing.T) {
	g := map[string]pkg{}
	for name, deps := range map[string][]string{
		m + "internal/digest":   nil,
		m + "internal/archive":  {m + "internal/digest", "github.com/aws/aws-sdk-go-v2/service/s3"},
		m + "internal/engine":   {m + "internal/store", m + "internal/store/storeerr", m + "internal/store/local"},
		m + "internal/store/s3": {m + "internal/store", m + "internal/cli"},
		m + "cmd/cache":         {m + "internal/cli", "k8s.io/apimachinery/pkg/runtime", m + "internal/store/all"},
		m + "internal/server":   {m + "internal/store/all", "k8s.io/client-go/kubernetes/typed/authentication/v1"},
		m + "cmd/cache-serve":   {m + "internal/server", "k8s.io/client-go/rest"},
	} {
		g[name] = pkg{ImportPath: name, Imports: deps, Deps: deps}
	}
	want := map[string][]violation{
		m + "internal/archive":   {{m + "internal/archive", "github.com/aws/aws-sdk-go-v2/service/s3"}},
		m + "internal/engine":    {{m + "internal/engine", m + "internal/store/local"}},
		m + "internal/store/...": {{m + "internal/store/s3", m + "internal/cli"}},
		m + "cmd/cache":          {{m + "cmd/cache", "k8s.io/apimachinery/pkg/runtime"}},
		// store/all's rule, then Kubernetes' (cmd/cache-serve and the
		// server may), then client-go's clientset's.
		m + "...": {
			{m + "internal/server", m + "internal/store/all"},
			{m + "cmd/cache", "k8s.io/apimachinery/pkg/runtime"},
			{m + "internal/server", "k8s.io/client-go/kubernetes/typed/authentication/v1"},
		},
		// Its layering, then client-go's.
		m + "internal/server/...": {
			{m + "internal/server", m + "internal/store/all"},
			{m + "internal/server", "k8s.io/client-go/kubernetes/typed/authentication/v1"},
		},
	}
	// The violations of the rules of one pattern, in the rules' order.
	found := map[string][]violation{}
	for _, r := range rules {
		f, _ := r.violations(g)
		found[r.pkgs] = append(found[r.pkgs], f...)
	}
	for _, r := range rules {
		if !slices.Equal(found[r.pkgs], want[r.pkgs]) {
			t.Errorf("rules for %s: found %q, want %q", r.pkgs, found[r.pkgs], want[r.pkgs])
		}
	}
	if c := chain(g, m+"cmd/cache", "k8s.io/apimachinery/pkg/runtime"); c != "cmd/cache -> k8s.io/apimachinery/pkg/runtime" {
		t.Errorf("chain: %s", c)
	}
}
