package lint

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

func (l *linter) checkTask(t *task) {
	for _, s := range t.steps {
		l.checkScript(t, s)
	}
	if t.stepAction {
		l.checkRefs(t)
		return
	}
	l.checkRefs(t)
	var fetches, uploads []*step
	for _, s := range t.steps {
		if s.cache == nil {
			continue
		}
		l.checkCacheStep(t, s)
		if s.cache.kind == "fetch" {
			fetches = append(fetches, s)
		} else {
			uploads = append(uploads, s)
		}
	}
	if len(fetches) > 0 {
		for _, u := range uploads {
			l.checkPair(t, fetches[0], u)
		}
		l.checkCacheVars(t, fetches)
	}
}

// ---- params of cache StepActions ----

func (l *linter) checkCacheStep(t *task, s *step) {
	cs := s.cache
	d := t.doc
	if a := cs.action; a != nil {
		passed := map[string]bool{}
		for _, p := range s.params {
			passed[p.name] = true
			if a.params[p.name] {
				continue
			}
			if to, ok := renamed[p.name]; ok && a.params[to] {
				l.report(d, p.nameNode, "unknown-param", fmt.Sprintf("%s does not declare %q: the reference tool renamed it to %s in v0.2.0", a.impl, p.name, to),
					"rename it to "+to)
				continue
			}
			if from := camelOf(p.name); from != "" && a.params[from] {
				l.report(d, p.nameNode, "unknown-param", fmt.Sprintf("%s declares the camelCase params of before v0.2.0: %q is %s there", a.impl, p.name, from),
					"rename it to "+from+", or reference the StepAction's v0.2.0 or later release")
				continue
			}
			if near := nearest(p.name, sortedKeys(a.params), 3); near != "" {
				l.report(d, p.nameNode, "unknown-param", fmt.Sprintf("%s does not declare %q", a.impl, p.name), "rename it to "+near)
				continue
			}
			l.report(d, p.nameNode, "unknown-param", fmt.Sprintf("%s does not declare %q (it declares %s)", a.impl, p.name, quoted(sortedKeys(a.params))),
				"remove it")
		}
		for _, r := range a.required {
			if !passed[r] && !passed[camelOf(r)] && !passed[strings.ToLower(r)] && nearest(r, sortedKeys(passed), 2) == "" {
				l.report(d, keyNode(s.node, "ref"), "missing-param", fmt.Sprintf("step %s passes no %s, which %s requires", s.name, r, a.impl),
					fmt.Sprintf("add the param %s", r))
			}
		}
	}
	if cs.remote != nil {
		l.checkPinned(t, s)
	}
	for i, pv := range cs.vals["patterns"] {
		l.checkPattern(t, s, pv, i)
	}
	l.checkRegistry(t, s)
}

func camelOf(upper string) string {
	for c, u := range renamed {
		if u == upper {
			return c
		}
	}
	return ""
}

var pinnedRe = regexp.MustCompile(`(^|[/@=:-])(v?\d+\.\d+(\.\d+)?[^/]*|[0-9a-f]{40})(/|$)`)

func (l *linter) checkPinned(t *task, s *step) {
	ref := s.cache.remote
	resolver := str(get(ref, "resolver"))
	warn := func(n *yaml.Node, what, fix string) {
		if n == nil {
			n = ref
		}
		l.report(t.doc, n, "unpinned-stepaction", fmt.Sprintf("step %s: %s, so the StepAction (and the params it takes) can change under this Pipeline", s.name, what), fix)
	}
	switch resolver {
	case "http":
		u, n := refParam(ref, "url")
		if strings.Contains(u, "/tekton/cache-fetch.yaml") || strings.Contains(u, "/tekton/cache-upload.yaml") {
			if strings.Contains(u, "tekton-cache/") && !strings.Contains(u, "tekton-caches") {
				l.report(t.doc, n, "image-unpullable", fmt.Sprintf("step %s: tekton/*.yaml in the repository name the image ko://..., which only ko resolves", s.name),
					"point the url at a release's cache-fetch.yaml / cache-upload.yaml (the image pinned by digest)")
				return
			}
		}
		if regexp.MustCompile(`/(main|master|HEAD|latest)/`).MatchString(u) || !pinnedRe.MatchString(u) {
			warn(n, fmt.Sprintf("the url %s names a branch, not a version", u), "use a url with a release tag or a commit")
		}
	case "git":
		rev, n := refParam(ref, "revision")
		if rev == "" || rev == "main" || rev == "master" || rev == "HEAD" {
			warn(n, fmt.Sprintf("the git revision is %q", rev), "set revision to a release tag or a commit")
		}
	case "bundles":
		b, n := refParam(ref, "bundle")
		if !strings.Contains(b, "@sha256:") && (!strings.Contains(b[strings.LastIndex(b, "/")+1:], ":") || strings.HasSuffix(b, ":latest")) {
			warn(n, fmt.Sprintf("the bundle %s has no version tag or digest", b), "add a version tag or @sha256: digest to the bundle")
		}
	case "hub":
		if v, _ := refParam(ref, "version"); v == "" {
			warn(ref, "no version is given", "add the param version")
		}
	}
}

func (l *linter) checkPattern(t *task, s *step, pv string, i int) {
	cs := s.cache
	n := cs.nodes["patterns"]
	if n != nil && n.Kind == yaml.SequenceNode && i < len(n.Content) {
		n = n.Content[i]
	}
	body := strings.TrimPrefix(strings.TrimSpace(pv), "!")
	if strings.Contains(body, "$(") {
		return
	}
	if j := strings.Index(body, "**"); j >= 0 && j+2 < len(body) && body[j+2] != '/' {
		good := body[:j+2] + "/" + body[j+2:]
		l.report(t.doc, n, "pattern-dialect", fmt.Sprintf("pattern %q: in the reference tool's dialect ** here matches any path ending in %q (also vendor/, testdata/ and names such as x%s); as a glob only top-level names", pv, body[j+2:], body[j+2:]),
			fmt.Sprintf("write %q", strings.Replace(pv, body, good, 1)))
	}
	if strings.HasPrefix(body, "/") {
		wd := cs.val("wd")
		fix := "write the pattern relative to WORKING_DIR, e.g. " + strings.TrimPrefix(filepath.Base(body), "/")
		if wd != "" && strings.HasPrefix(body, wd+"/") {
			fix = fmt.Sprintf("write %q (relative to WORKING_DIR)", strings.TrimPrefix(body, wd+"/"))
		}
		l.report(t.doc, n, "pattern-absolute", fmt.Sprintf("pattern %q is absolute: it matches only while WORKING_DIR is written exactly as %s", pv, filepath.Dir(body)), fix)
	}
	if cs.reference && !strings.HasPrefix(strings.TrimSpace(pv), "!") {
		wd := strings.TrimRight(cs.val("wd"), "/")
		for _, f := range cs.vals["path"] {
			rel, ok := strings.CutPrefix(f, wd+"/")
			if wd == "" || !ok {
				continue
			}
			excluded := false
			for _, other := range cs.vals["patterns"] {
				if strings.HasPrefix(strings.TrimSpace(other), "!") && strings.Contains(other, rel) {
					excluded = true
				}
			}
			if !excluded && (strings.HasPrefix(body, "**") || strings.HasPrefix(body, rel+"/") || strings.HasPrefix(body, f+"/")) {
				l.report(t.doc, n, "pattern-key-drift", fmt.Sprintf("pattern %q can match files inside the cached folder %s, which is inside WORKING_DIR: %s hashes them, so the key changes once the cache is restored", pv, rel, cs.action.impl),
					fmt.Sprintf("add the pattern \"!%s\" or cache a folder outside WORKING_DIR", rel))
			}
		}
	}
}

var privateHost = regexp.MustCompile(`^(localhost|127\.|10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|[^.:]+(:\d+)?$|.*\.svc(\.cluster\.local)?(:\d+)?$|.*\.local(:\d+)?$)`)

func (l *linter) checkRegistry(t *task, s *step) {
	cs := s.cache
	u := cs.val("store")
	rest, ok := strings.CutPrefix(u, "oci://")
	if !ok || strings.Contains(u, "$(") {
		return
	}
	host, _, _ := strings.Cut(rest, "/")
	if !privateHost.MatchString(host) {
		return
	}
	ins := strings.TrimSpace(cs.val("insecure"))
	if strings.EqualFold(ins, "true") || strings.Contains(ins, "$(") {
		return
	}
	for _, e := range s.env {
		if e.name == "SSL_CERT_FILE" || e.name == "SSL_CERT_DIR" {
			return
		}
	}
	insName := "INSECURE"
	if cs.action != nil && cs.action.role["insecure"] != "" {
		insName = cs.action.role["insecure"]
	} else if cs.action == nil {
		insName = "CACHE_INSECURE (--insecure)"
	}
	l.report(t.doc, cs.nodes["store"], "insecure-registry", fmt.Sprintf("the registry %s is inside the cluster, which rarely has a certificate the step trusts, and %s is not true", host, insName),
		fmt.Sprintf("set %s to \"true\" for plain HTTP or a self-signed certificate, or mount the CA and set SSL_CERT_FILE", insName))
}

// ---- fetch and upload together ----

func storeBase(u string) (base, template string) {
	if rest, ok := strings.CutPrefix(u, "oci://"); ok {
		if i := strings.LastIndex(rest, ":"); i > strings.LastIndex(rest, "/") {
			return "oci://" + rest[:i], rest[i+1:]
		}
		return u, ""
	}
	if i := strings.LastIndex(u, "/"); i >= 0 {
		return u[:i], u[i+1:]
	}
	return u, ""
}

func (l *linter) checkPair(t *task, f, u *step) {
	fc, uc := f.cache, u.cache
	d := t.doc
	ours := uc.action != nil && uc.action.role["key"] != ""
	n := orNode(uc.nodes["store"], keyNode(u.node, "ref"))
	if uc.action != nil && uc.action.role["fetched"] != "" && len(uc.vals["fetched"]) == 0 {
		name := uc.action.role["fetched"]
		l.report(d, keyNode(u.node, "ref"), "upload-without-fetched", fmt.Sprintf("step %s gets no %s: it cannot skip the upload after step %s restored the exact key", u.name, name, f.name),
			fmt.Sprintf("add the param %s: $(steps.%s.results.fetched)", name, f.name))
	}
	fb, ft := storeBase(fc.val("store"))
	ub, ut := storeBase(uc.val("store"))
	if fc.val("store") != "" && uc.val("store") != "" && fb != ub {
		l.report(d, uc.nodes["store"], "key-mismatch", fmt.Sprintf("step %s saves to %s but step %s restores from %s", u.name, ub, f.name, fb),
			"use the same store in both steps")
	}
	if !sameList(fc.vals["path"], uc.vals["path"]) {
		l.report(d, orNode(uc.nodes["path"], keyNode(u.node, "ref")), "key-mismatch", fmt.Sprintf("step %s saves %s but step %s restores %s", u.name, orNone(uc.vals["path"]), f.name, orNone(fc.vals["path"])),
			"pass the same CACHE_PATH to both steps")
	}
	// frozen-cache: an exact-hit skip on a lock-file key, no restore keys.
	if strings.Contains(uc.val("fetched"), "$(steps."+f.name+".results.fetched)") && len(fc.vals["restore"]) == 0 &&
		strings.Contains(strings.ToLower(ft), "{{hash}}") && !strings.Contains(ft, "$(context.") {
		if v, ok := t.buildCache(fc.vals["path"]); ok {
			prefix := strings.SplitN(ft, "{{", 2)[0]
			fix := fmt.Sprintf("add RESTORE_KEYS: %q to both steps, so a lock-file change restores the old entry and saves a fresh one, or drop FETCHED so each run refreshes the entry", prefix)
			if prefix == "" {
				fix = "start the key with a prefix (go-{{hash}}) and add that prefix as RESTORE_KEYS to both steps, or drop FETCHED so each run refreshes the entry"
			}
			if fc.action != nil && fc.action.role["restore"] == "" {
				fix = "drop FETCHED so each run refreshes the entry, or use tekton-cache's StepActions with RESTORE_KEYS (" + fc.action.impl + " has none)"
			}
			l.report(d, orNode(uc.nodes["fetched"], n), "frozen-cache", fmt.Sprintf("the build cache %s is saved under a key of lock files only and the upload is skipped on an exact hit: it is never refreshed while the lock files stay the same, and starts cold when they change", v), fix)
		}
	}
	sharedKey := strings.Contains(uc.val("key"), "$(steps."+f.name+".results.key)")
	if sharedKey {
		return
	}
	if ft != ut && uc.val("key") == "" {
		l.report(d, n, "key-mismatch", fmt.Sprintf("step %s saves under the key template %q but step %s looks up %q", u.name, ut, f.name, ft), "use the same key template in both steps")
	}
	if !sameList(fc.vals["patterns"], uc.vals["patterns"]) {
		l.report(d, orNode(uc.nodes["patterns"], n), "key-mismatch", fmt.Sprintf("step %s hashes %s but step %s hashes %s: the keys differ", u.name, orNone(uc.vals["patterns"]), f.name, orNone(fc.vals["patterns"])),
			keyFix(ours, f.name, "pass the same PATTERNS to both steps"))
	}
	if fc.val("wd") != uc.val("wd") {
		l.report(d, orNode(uc.nodes["wd"], n), "key-mismatch", fmt.Sprintf("step %s hashes in working dir %q but step %s in %q: the keys differ", u.name, uc.val("wd"), f.name, fc.val("wd")),
			keyFix(ours, f.name, "pass the same WORKING_DIR to both steps"))
	}
	if ours && uc.val("key") == "" {
		l.report(d, keyNode(u.node, "ref"), "key-mismatch", fmt.Sprintf("step %s computes its key again: a build step that changes a lock file (go mod tidy, npm install) makes it save under another key than step %s looked up", u.name, f.name),
			fmt.Sprintf("add the param KEY: $(steps.%s.results.key)", f.name))
	}
}

func keyFix(ours bool, fetch, other string) string {
	if ours {
		return fmt.Sprintf("pass KEY: $(steps.%s.results.key) to the upload (or %s)", fetch, strings.TrimPrefix(other, "pass "))
	}
	return other
}

func orNode(a, b *yaml.Node) *yaml.Node {
	if a != nil {
		return a
	}
	return b
}

func orNone(v []string) string {
	if len(v) == 0 {
		return "nothing (detected lock files)"
	}
	return strings.Join(v, ", ")
}

func sameList(a, b []string) bool {
	x, y := append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	return strings.Join(x, "\x00") == strings.Join(y, "\x00")
}

// ---- cache variables ----

type tool struct {
	name  string
	words *regexp.Regexp // in a script or command
	image *regexp.Regexp // image repository
	vars  [][]string     // each group: variables any of which sets one cache
	// folders whose names show the tool's cache is a folder of the
	// project (node_modules, .venv) rather than a variable's.
	folders []string
	build   []string // build-cache variables (frozen-cache)
}

var tools = []tool{
	{name: "go", words: regexp.MustCompile(`(^|[\s;&|(])go\s+(build|test|vet|install|run|mod|generate|list|get)\b`), image: regexp.MustCompile(`(^|/)golang$`),
		vars: [][]string{{"GOCACHE"}, {"GOMODCACHE", "GOPATH"}}, build: []string{"GOCACHE"}},
	{name: "golangci-lint", words: regexp.MustCompile(`(^|[\s;&|(/])golangci-lint\s`), image: regexp.MustCompile(`golangci-lint$`),
		vars: [][]string{{"GOLANGCI_LINT_CACHE"}, {"GOCACHE"}, {"GOMODCACHE", "GOPATH"}}, build: []string{"GOLANGCI_LINT_CACHE", "GOCACHE"}},
	{name: "npm", words: regexp.MustCompile(`(^|[\s;&|(])(npm|npx)\s`), vars: [][]string{{"npm_config_cache", "NPM_CONFIG_CACHE"}}, folders: []string{"node_modules"}},
	{name: "yarn", words: regexp.MustCompile(`(^|[\s;&|(])yarn(\s|$)`), vars: [][]string{{"YARN_CACHE_FOLDER"}}, folders: []string{"node_modules"}},
	{name: "pnpm", words: regexp.MustCompile(`(^|[\s;&|(])pnpm\s`), vars: [][]string{{"npm_config_store_dir", "NPM_CONFIG_STORE_DIR"}}, folders: []string{"node_modules"}},
	{name: "pip", words: regexp.MustCompile(`(^|[\s;&|(])(pip3?|python3? -m pip)\s`), vars: [][]string{{"PIP_CACHE_DIR"}}, folders: []string{".venv", "venv"}},
	{name: "poetry", words: regexp.MustCompile(`(^|[\s;&|(])poetry\s`), vars: [][]string{{"POETRY_CACHE_DIR"}}, folders: []string{".venv"}},
	{name: "uv", words: regexp.MustCompile(`(^|[\s;&|(])uv\s`), vars: [][]string{{"UV_CACHE_DIR"}}, folders: []string{".venv"}},
	{name: "mvn", words: regexp.MustCompile(`(^|[\s;&|(/])mvnw?\s`), image: regexp.MustCompile(`(^|/)maven$`), vars: [][]string{{"MAVEN_OPTS", "MAVEN_ARGS"}}, folders: []string{".m2", "repository"}},
	{name: "gradle", words: regexp.MustCompile(`(^|[\s;&|(/])gradlew?\s`), image: regexp.MustCompile(`(^|/)gradle$`), vars: [][]string{{"GRADLE_USER_HOME"}}, folders: []string{".gradle"}},
	{name: "cargo", words: regexp.MustCompile(`(^|[\s;&|(])cargo\s`), image: regexp.MustCompile(`(^|/)rust$`), vars: [][]string{{"CARGO_HOME"}}, folders: []string{".cargo"}, build: []string{"CARGO_TARGET_DIR"}},
}

// knownVars are variables near a cache variable's spelling that are right.
var knownVars = set("GOPATH", "GOROOT", "GOFLAGS", "GOPROXY", "GOARCH", "GOOS", "GOAMD64", "GOARM", "GOTOOLCHAIN", "GOPRIVATE",
	"GONOSUMDB", "GOSUMDB", "GOWORK", "GOENV", "GOBIN", "GOTMPDIR", "CGO_ENABLED", "GOINSECURE", "GONOPROXY", "GOEXPERIMENT",
	"CARGO_TARGET_DIR", "CARGO_HOME", "RUSTUP_HOME", "npm_config_cache", "NPM_CONFIG_CACHE", "npm_config_store_dir",
	"NPM_CONFIG_STORE_DIR", "MAVEN_OPTS", "MAVEN_ARGS", "MAVEN_CONFIG", "GRADLE_OPTS", "GRADLE_USER_HOME", "JAVA_OPTS",
	"PIP_CACHE_DIR", "PIP_NO_CACHE_DIR", "POETRY_CACHE_DIR", "POETRY_HOME", "UV_CACHE_DIR", "YARN_CACHE_FOLDER", "GOLANGCI_LINT_CACHE",
	"GOCACHE", "GOMODCACHE", "GOCACHEPROG", "XDG_CACHE_HOME")

func allCacheVars() []string {
	var out []string
	for _, tl := range tools {
		for _, g := range tl.vars {
			out = append(out, g...)
		}
		out = append(out, tl.build...)
	}
	return out
}

// under tells whether v is inside one of the folders.
func under(v string, folders []string) bool {
	v = strings.TrimRight(v, "/")
	for _, f := range folders {
		if v == f || strings.HasPrefix(v, f+"/") {
			return true
		}
	}
	return false
}

// varPath is where a cache variable points (MAVEN_OPTS' -Dmaven.repo.local).
func varPath(name, value string) string {
	if name == "MAVEN_OPTS" || name == "MAVEN_ARGS" {
		if m := regexp.MustCompile(`-Dmaven\.repo\.local=(\S+)`).FindStringSubmatch(value); m != nil {
			return m[1]
		}
		return ""
	}
	return value
}

// buildCache returns a build-cache variable set in t that points into folders.
func (t *task) buildCache(folders []string) (string, bool) {
	for _, s := range t.steps {
		for _, tl := range tools {
			for _, b := range tl.build {
				if e, ok := s.envValue(b); ok && under(e.value, folders) {
					return b, true
				}
			}
		}
	}
	return "", false
}

func (s *step) text() string {
	var b strings.Builder
	b.WriteString(s.script + "\n" + strings.Join(s.command, " ") + "\n")
	for _, e := range s.env {
		b.WriteString(e.value + "\n")
	}
	return b.String()
}

func imageRepo(image string) (repo, tag string) {
	if i := strings.Index(image, "@"); i >= 0 {
		return image[:i], image[i:]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i], image[i+1:]
	}
	return image, ""
}

func (l *linter) checkCacheVars(t *task, fetches []*step) {
	var folders []string
	for _, f := range fetches {
		folders = append(folders, f.cache.vals["path"]...)
	}
	if len(folders) == 0 {
		return // nothing known to be restored
	}
	d := t.doc
	known := allCacheVars()
	reported := map[string]bool{}
	type img struct {
		s    *step
		repo string
		tag  string
	}
	var images []img
	for _, s := range t.steps {
		// Typos: any variable a cache variable's spelling away.
		for _, e := range s.env {
			if knownVars[e.name] || reported["typo "+e.name] || strings.HasPrefix(e.name, "CACHE_") {
				continue
			}
			if near := nearest(e.name, known, 2); near != "" && len(e.name) >= 6 {
				reported["typo "+e.name] = true
				l.report(d, e.node, "cache-var-typo", fmt.Sprintf("%s is not a variable any tool reads: %s is meant, so the tool writes its cache to its default location", e.name, near),
					"rename it to "+near)
			}
		}
		if s.cache != nil {
			continue
		}
		text := s.text()
		repo, tag := imageRepo(s.image)
		usesCache := false
		for _, tl := range tools {
			runs := tl.words.MatchString(text) || tl.image != nil && tl.image.MatchString(repo)
			if !runs {
				continue
			}
			for _, g := range tl.vars {
				var set *envVar
				for _, name := range g {
					if e, ok := s.envValue(name); ok {
						set = &e
						break
					}
				}
				if set == nil {
					skip := false
					for _, f := range folders {
						for _, tf := range tl.folders {
							if filepath.Base(f) == tf || strings.HasSuffix(f, "/"+tf) {
								skip = true
							}
						}
					}
					if !skip && !reported["missing "+g[0]] && !(tl.name == "mvn" && strings.Contains(text, "-Dmaven.repo.local")) {
						reported["missing "+g[0]] = true
						l.report(d, get(s.node, "name"), "cache-var-missing", fmt.Sprintf("step %s runs %s without %s: its cache goes to the default location, which no fetch restores", s.name, tl.name, g[0]),
							fmt.Sprintf("set %s in the Task's stepTemplate.env to a folder under %s", g[0], orNone(folders)))
					}
					continue
				}
				p := varPath(set.name, set.value)
				if p == "" || strings.Contains(p, "$(params.") {
					continue
				}
				if under(p, folders) {
					usesCache = true
				} else if !reported["outside "+set.name] {
					reported["outside "+set.name] = true
					l.report(d, set.node, "cache-var-outside", fmt.Sprintf("%s is %s, outside every folder a fetch restores (%s): step %s's %s cache starts cold every run", set.name, p, orNone(folders), s.name, tl.name),
						fmt.Sprintf("point %s into %s, or add its folder to CACHE_PATH", set.name, orNone(folders)))
				}
			}
			if tl.name == "go" || tl.name == "golangci-lint" {
				if e, ok := s.envValue("GOTOOLCHAIN"); ok && (e.value == "auto" || strings.HasSuffix(e.value, "+auto") || strings.HasSuffix(e.value, "+path")) {
					if m, ok := s.envValue("GOMODCACHE"); ok && under(m.value, folders) && !reported["toolchain"] {
						reported["toolchain"] = true
						l.report(d, e.node, "toolchain-download", fmt.Sprintf("GOTOOLCHAIN=%s downloads the toolchain a go.mod asks for into GOMODCACHE (%s), a restored folder: every toolchain (100+ MB) is saved in the cache and kept", e.value, m.value),
							"set GOTOOLCHAIN=local and use an image with the Go version the go.mod needs")
					}
				}
				if m, ok := s.envValue("GOMODCACHE"); ok && under(m.value, folders) && l.opts.WorkDir != "" && !reported["vendor"] {
					if _, err := os.Stat(filepath.Join(l.opts.WorkDir, "vendor", "modules.txt")); err == nil {
						reported["vendor"] = true
						l.report(d, m.node, "vendored-modules", fmt.Sprintf("the repository in %s vendors its modules (vendor/modules.txt): go builds from vendor/ and never reads GOMODCACHE, which is cached for nothing", l.opts.WorkDir),
							"drop GOMODCACHE's folder from CACHE_PATH (keep GOCACHE)")
					}
				}
			}
		}
		if usesCache && s.image != "" && !strings.Contains(s.image, "$(") {
			images = append(images, img{s, repo, tag})
			floating := tag == "" || tag == "latest" || !strings.HasPrefix(tag, "@") && !strings.ContainsAny(tag, "0123456789")
			if floating {
				l.report(d, s.imageNode, "floating-image", fmt.Sprintf("step %s's image %s has a floating tag: the toolchain changes under the cache, which then holds entries of several versions and misses after each change", s.name, s.image),
					fmt.Sprintf("pin a version tag (e.g. %s:<version>) or a digest", repo))
			}
		}
	}
	for i, a := range images {
		for _, b := range images[:i] {
			if a.repo == b.repo && a.tag != b.tag && !reported["mix "+a.s.name] {
				reported["mix "+a.s.name] = true
				l.report(d, a.s.imageNode, "toolchain-mix", fmt.Sprintf("steps %s (%s) and %s (%s) share one cache with two versions of one toolchain: each evicts or duplicates the other's entries", b.s.name, b.s.image, a.s.name, a.s.image),
					"use one image for both steps, or give each toolchain its own cache folder and key")
			}
		}
	}
}

// ---- scripts ----

var spliceRe = regexp.MustCompile(`\$\((params|steps|tasks|inputs)\.[A-Za-z_][^)]*\)`)

var bashisms = []struct {
	re   *regexp.Regexp
	what string
	fix  string
}{
	{regexp.MustCompile(`\[\[\s`), "[[ ]] is bash", "use [ ] (test), or start the script with #!/bin/bash in an image that has bash"},
	{regexp.MustCompile(`(^|\s)function\s+\w+`), "the function keyword is bash", "write name() { ... }"},
	{regexp.MustCompile(`(^|[\s;])source\s`), "source is bash", "use . file"},
	{regexp.MustCompile(`<<<`), "a here-string (<<<) is bash", "use printf '%s' \"$x\" | cmd"},
	{regexp.MustCompile(`\$\{\w+(//|:[0-9])`), "${var//x/y} and ${var:n} are bash", "use sed, or cut"},
	{regexp.MustCompile(`(^|\s)\w+=\(`), "arrays are bash", "use the positional parameters (set -- a b c)"},
	{regexp.MustCompile(`(^|\s)echo\s+-e\s`), "echo -e is not portable", "use printf"},
}

func scriptLine(n *yaml.Node, i int) *yaml.Node {
	if n == nil {
		return nil
	}
	c := *n
	if n.Style == yaml.LiteralStyle || n.Style == yaml.FoldedStyle {
		c.Line = n.Line + 1 + i
		c.Column = n.Column + 2
	}
	return &c
}

func (l *linter) checkScript(t *task, s *step) {
	if s.script == "" {
		return
	}
	lines := strings.Split(s.script, "\n")
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if m := spliceRe.FindString(line); m != "" {
			l.report(t.doc, scriptLine(s.scriptNode, i), "param-in-script", fmt.Sprintf("step %s splices %s into its script: a value with quotes, spaces or $(...) in it runs as shell", s.name, m),
				fmt.Sprintf("pass it in env (- name: VALUE, value: %s) and use \"$VALUE\" in the script", m))
		}
	}
	first := strings.TrimSpace(lines[0])
	if strings.HasPrefix(first, "#!") && !strings.HasSuffix(first, "/sh") && !strings.HasSuffix(first, " sh") {
		return // bash, python ...: not sh
	}
	for i, line := range lines {
		code := line
		if j := strings.Index(code, "#"); j >= 0 && (j == 0 || code[j-1] == ' ') {
			code = code[:j]
		}
		for _, b := range bashisms {
			if b.re.MatchString(code) {
				l.report(t.doc, scriptLine(s.scriptNode, i), "shell-bashism", fmt.Sprintf("step %s runs its script with sh, where %s", s.name, b.what), b.fix)
				break
			}
		}
	}
}

// ---- references ----

var refRe = regexp.MustCompile(`\$\((steps|tasks|params|workspaces)\.([^)]*)\)`)

// scalars walks n and calls f for every scalar value.
func scalars(n *yaml.Node, f func(*yaml.Node)) {
	if n == nil {
		return
	}
	switch n.Kind {
	case yaml.ScalarNode:
		f(n)
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			scalars(n.Content[i], f)
		}
	default:
		for _, c := range n.Content {
			scalars(c, f)
		}
	}
}

func refName(rest string) (name, more string) {
	rest = strings.TrimPrefix(rest, "[\"")
	for i, c := range rest {
		if c == '.' || c == '[' || c == '"' {
			return rest[:i], rest[i:]
		}
	}
	return rest, ""
}

func (l *linter) checkRefs(t *task) {
	d := t.doc
	walk := func(n *yaml.Node, where string) {
		scalars(n, func(v *yaml.Node) {
			for _, m := range refRe.FindAllStringSubmatch(v.Value, -1) {
				kind, rest := m[1], m[2]
				name, more := refName(rest)
				switch kind {
				case "params":
					if _, ok := t.params[name]; !ok {
						fix := "declare it in the Task's params"
						if near := nearest(name, sortedKeys(t.params), 3); near != "" {
							fix = "use $(params." + near + ")"
						}
						l.report(d, v, "bad-reference", fmt.Sprintf("%s: %s refers to a param %s does not declare", where, m[0], t.name), fix)
					}
				case "workspaces":
					if !t.workspaces[name] && !t.stepAction {
						l.report(d, v, "bad-reference", fmt.Sprintf("%s: %s refers to a workspace %s does not declare", where, m[0], t.name),
							fmt.Sprintf("declare the workspace %s, or use one of %s", name, orNone(sortedKeys(t.workspaces))))
					}
				case "tasks":
					fix := "within a Task, refer to a step's result: $(steps.<step>.results.<name>)"
					if res, ok := strings.CutPrefix(more, ".results."); ok {
						if _, isStep := t.stepByName[name]; isStep {
							fix = fmt.Sprintf("write $(steps.%s.results.%s)", name, res)
						}
					}
					l.report(d, v, "bad-reference", fmt.Sprintf("%s: %s is a Pipeline-level reference, which Tekton does not replace inside a Task: the step gets the text as it is", where, m[0]), fix)
				case "steps":
					res, ok := strings.CutPrefix(more, ".results.")
					if !ok {
						continue
					}
					s, found := t.stepByName[name]
					if !found {
						l.report(d, v, "bad-reference", fmt.Sprintf("%s: %s names no step of %s (steps: %s), so the value stays unresolved text", where, m[0], t.name, quoted(stepNames(t))),
							"use the name of the step that produces the result")
						continue
					}
					res, _ = refName(res)
					if len(s.results) == 0 && s.cache == nil && s.ref != nil {
						continue // a StepAction we do not know
					}
					if !s.results[res] {
						fix := "use one of " + orNone(sortedKeys(s.results))
						if near := nearest(res, sortedKeys(s.results), 3); near != "" {
							fix = fmt.Sprintf("write $(steps.%s.results.%s)", name, near)
						}
						l.report(d, v, "bad-reference", fmt.Sprintf("%s: step %s produces no result %q, so the value stays unresolved text", where, name, res), fix)
					}
				}
			}
		})
	}
	for _, s := range t.steps {
		where := "step " + s.name
		if t.stepAction {
			for _, k := range []string{"env", "args", "command", "image", "workingDir"} {
				walk(get(s.node, k), "StepAction "+t.name)
			}
			continue
		}
		for _, k := range []string{"params", "env", "args", "command", "image", "workingDir", "when", "script"} {
			walk(get(s.node, k), where)
		}
	}
	if !t.stepAction {
		walk(get(t.spec, "results"), "Task "+t.name+" results")
		walk(path(t.spec, "stepTemplate", "env"), "stepTemplate")
	}
}

func stepNames(t *task) []string {
	var out []string
	for _, s := range t.steps {
		out = append(out, s.name)
	}
	return out
}

func (l *linter) checkPipeline(p *pipeline) {
	d := p.doc
	check := func(n *yaml.Node, where string) {
		scalars(n, func(v *yaml.Node) {
			for _, m := range refRe.FindAllStringSubmatch(v.Value, -1) {
				name, more := refName(m[2])
				switch m[1] {
				case "params":
					if !p.params[name] {
						l.report(d, v, "bad-reference", fmt.Sprintf("%s: %s refers to a param the Pipeline does not declare", where, m[0]), "declare it in the Pipeline's params")
					}
				case "steps":
					l.report(d, v, "bad-reference", fmt.Sprintf("%s: %s is a step-level reference, which only works inside a Task", where, m[0]),
						"expose the step's result as a Task result (results: - name: x, value: $(steps.<step>.results.<name>)) and use $(tasks.<task>.results.x)")
				case "tasks":
					res, ok := strings.CutPrefix(more, ".results.")
					if !ok {
						continue
					}
					res, _ = refName(res)
					if _, ok := p.tasks[name]; !ok {
						l.report(d, v, "bad-reference", fmt.Sprintf("%s: %s names no task of the Pipeline", where, m[0]), "use the name of a Pipeline task")
					} else if rs, known := p.taskResults[name]; known && !rs[res] {
						l.report(d, v, "bad-reference", fmt.Sprintf("%s: task %s produces no result %q", where, name, res), "use one of "+orNone(sortedKeys(rs)))
					}
				}
			}
		})
	}
	for name, pt := range p.tasks {
		check(get(pt, "params"), "task "+name)
		check(get(pt, "when"), "task "+name)
	}
	check(get(p.spec, "results"), "Pipeline results")
}

func (l *linter) checkStepActionImage(v *vendoredAction) {
	img := get(v.node, "image")
	if strings.HasPrefix(str(img), "ko://") && v.doc.pac {
		l.report(v.doc, img, "image-unpullable", fmt.Sprintf("StepAction %s's image %s is resolved only by ko; applied as it is (Pipelines-as-Code does), its steps fail to pull", v.doc.name, str(img)),
			"copy the StepAction from a release (the image pinned by digest), or run ko resolve on it")
	}
}

// ---- helpers ----

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// nearest returns the candidate closest to s (case-insensitively) within
// max edits, or "".
func nearest(s string, cands []string, max int) string {
	best, bestD := "", max+1
	sort.Strings(cands)
	for _, c := range cands {
		if c == s {
			return ""
		}
		if d := distance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
