package lint

import (
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// action is what a cache StepAction declares.
type action struct {
	kind     string // fetch or upload
	impl     string // for messages
	params   map[string]bool
	required []string
	results  map[string]bool
	// role maps what a param means (patterns, store, path, wd, key,
	// fetched, restore, insecure, force) to its name.
	role map[string]string
	// reference: the step runs the reference tool (openshift-pipelines/
	// tekton-caches), whose patterns also match files in the cached folders.
	reference bool
	// remote: referenced through a resolver (pin it).
	ours bool
}

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

var commonParams = []string{"PATTERNS", "CACHE_PATH", "WORKING_DIR", "INSECURE", "DOCKER_CONFIG",
	"GOOGLE_APPLICATION_CREDENTIALS", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "BLOB_QUERY_PARAMS"}

var upperRoles = map[string]string{"patterns": "PATTERNS", "path": "CACHE_PATH", "wd": "WORKING_DIR", "key": "KEY",
	"fetched": "FETCHED", "restore": "RESTORE_KEYS", "insecure": "INSECURE", "force": "FORCE_CACHE_UPLOAD", "docker": "DOCKER_CONFIG"}

func withRole(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

// Our StepActions (tekton/cache-fetch.yaml, tekton/cache-upload.yaml; a
// test checks these lists against the files).
var (
	oursFetch = &action{kind: "fetch", impl: "tekton-cache's cache-fetch", ours: true,
		params: set(append(commonParams, "SOURCE", "RESTORE_KEYS", "STRICT", "TIMEOUT", "JOBS", "LOOKUP_ONLY",
			"FAIL_ON_MISS", "CROSS_PLATFORM", "SCOPE", "FALLBACK_SCOPE", "TOKEN_FILE")...),
		required: []string{"SOURCE", "CACHE_PATH"},
		results: set("status", "error", "fetched", "restored", "key", "matched-key", "restore-key", "seconds",
			"bytes", "store", "age-seconds", "platform"),
		role: withRole(upperRoles, "store", "SOURCE")}
	oursUpload = &action{kind: "upload", impl: "tekton-cache's cache-upload", ours: true,
		params: set(append(commonParams, "TARGET", "KEY", "RESTORE_KEYS", "FETCHED", "FORCE_CACHE_UPLOAD", "STRICT",
			"TIMEOUT", "JOBS", "CROSS_PLATFORM", "READ_ONLY", "SCOPE", "TOKEN_FILE")...),
		required: []string{"TARGET", "CACHE_PATH"},
		results:  set("status", "error", "uploaded", "key", "seconds", "bytes", "uploaded-bytes"),
		role:     withRole(upperRoles, "store", "TARGET")}

	// The reference tool's StepActions, v0.2.0 and later.
	refFetch = &action{kind: "fetch", impl: "tekton-caches' cache-fetch", reference: true,
		params: set(append(commonParams, "SOURCE")...), required: []string{"SOURCE", "CACHE_PATH"},
		results: set("fetched"), role: refRoles("SOURCE")}
	refUpload = &action{kind: "upload", impl: "tekton-caches' cache-upload", reference: true,
		params: set(append(commonParams, "TARGET", "FETCHED", "FORCE_CACHE_UPLOAD")...), required: []string{"TARGET", "CACHE_PATH"},
		results: set(), role: refRoles("TARGET")}

	// Before v0.2.0 (OpenShift Pipelines 1.18's osp-v1.18.0), camelCase.
	camelRoles = map[string]string{"patterns": "patterns", "path": "cachePath", "wd": "workingdir", "insecure": "insecure",
		"fetched": "fetched", "force": "force-cache-upload"}
	camelCommon = []string{"patterns", "cachePath", "workingdir", "insecure", "googleCredentialsPath", "awsConfigFile",
		"awsCredentialFile", "blobQueryParams"}
	refFetchV1 = &action{kind: "fetch", impl: "tekton-caches' cache-fetch before v0.2.0", reference: true,
		params: set(append(camelCommon, "source")...), required: []string{"source", "cachePath"},
		results: set("fetched"), role: withRole(camelRoles, "store", "source")}
	refUploadV1 = &action{kind: "upload", impl: "tekton-caches' cache-upload before v0.2.0", reference: true,
		params: set(append(camelCommon, "target", "fetched", "force-cache-upload")...), required: []string{"target", "cachePath"},
		results: set(), role: withRole(camelRoles, "store", "target")}
)

// refRoles are the reference tool's: no KEY, no RESTORE_KEYS.
func refRoles(store string) map[string]string {
	m := withRole(upperRoles, "store", store)
	delete(m, "key")
	delete(m, "restore")
	return m
}

// renamed maps the reference tool's camelCase params to today's names.
var renamed = map[string]string{
	"patterns": "PATTERNS", "source": "SOURCE", "target": "TARGET", "cachePath": "CACHE_PATH", "workingdir": "WORKING_DIR",
	"insecure": "INSECURE", "googleCredentialsPath": "GOOGLE_APPLICATION_CREDENTIALS", "awsConfigFile": "AWS_CONFIG_FILE",
	"awsCredentialFile": "AWS_SHARED_CREDENTIALS_FILE", "blobQueryParams": "BLOB_QUERY_PARAMS",
	"fetched": "FETCHED", "force-cache-upload": "FORCE_CACHE_UPLOAD",
}

// catalog knows the cache StepActions: ours, the reference tool's, and the
// copies found among the linted files (vendored StepActions).
type catalog struct {
	vendored map[string]*vendoredAction
}

type vendoredAction struct {
	act  *action
	doc  *document
	node *yaml.Node
}

// cacheCall matches a command line that runs a cache binary.
var cacheCall = regexp.MustCompile(`(?:^|[\s;&|(/])cache\s+(fetch|restore|upload|save)\b`)

func newCatalog(docs []*document) *catalog {
	c := &catalog{vendored: map[string]*vendoredAction{}}
	for _, d := range docs {
		if d.kind != "StepAction" {
			continue
		}
		spec := get(d.root, "spec")
		script := str(get(spec, "script"))
		kind := ""
		switch m := cacheCall.FindStringSubmatch(script); {
		case m != nil && (m[1] == "fetch" || m[1] == "restore"):
			kind = "fetch"
		case m != nil:
			kind = "upload"
		case strings.Contains(d.name, "fetch"):
			kind = "fetch"
		case strings.Contains(d.name, "upload"):
			kind = "upload"
		}
		if kind == "" || !strings.Contains(d.name, "cache") && !cacheCall.MatchString(script) {
			continue
		}
		a := &action{kind: kind, impl: "the StepAction " + d.name + " in " + d.file, params: map[string]bool{},
			results: map[string]bool{}, role: map[string]string{}}
		a.ours = strings.Contains(script, "CACHE_RESULTS_DIR") || strings.Contains(str(get(spec, "image")), "tekton-cache")
		a.reference = !a.ours
		for _, p := range items(get(spec, "params")) {
			n := str(get(p, "name"))
			a.params[n] = true
			if get(p, "default") == nil {
				a.required = append(a.required, n)
			}
			for role, names := range map[string][]string{"patterns": {"PATTERNS", "patterns"}, "store": {"SOURCE", "TARGET", "source", "target"},
				"path": {"CACHE_PATH", "cachePath"}, "wd": {"WORKING_DIR", "workingdir"}, "key": {"KEY"}, "fetched": {"FETCHED", "fetched"},
				"restore": {"RESTORE_KEYS"}, "insecure": {"INSECURE", "insecure"}, "force": {"FORCE_CACHE_UPLOAD", "force-cache-upload"}} {
				for _, nm := range names {
					if n == nm {
						a.role[role] = n
					}
				}
			}
		}
		for _, r := range items(get(spec, "results")) {
			a.results[str(get(r, "name"))] = true
		}
		c.vendored[d.name] = &vendoredAction{act: a, doc: d, node: spec}
	}
	return c
}

// cacheStep is a step that fetches or uploads a cache.
type cacheStep struct {
	kind   string
	action *action // nil for a script or command that runs the binary
	remote *yaml.Node
	// vals and nodes hold what the step sets, by role.
	vals  map[string][]string
	nodes map[string]*yaml.Node
	// reference: the reference tool computes the key.
	reference bool
}

func (c *cacheStep) val(role string) string { return strings.Join(c.vals[role], "\n") }

// refTarget describes a step's ref: its name, or the resolver's location.
func refTarget(ref *yaml.Node) (name, where string) {
	if n := str(get(ref, "name")); n != "" {
		return n, ""
	}
	var parts []string
	for _, p := range items(get(ref, "params")) {
		parts = append(parts, str(get(p, "name"))+"="+str(get(p, "value")))
	}
	sort.Strings(parts)
	return "", str(get(ref, "resolver")) + " " + strings.Join(parts, " ")
}

func refParam(ref *yaml.Node, name string) (string, *yaml.Node) {
	for _, p := range items(get(ref, "params")) {
		if str(get(p, "name")) == name {
			return str(get(p, "value")), get(p, "value")
		}
	}
	return "", nil
}

// identify tells whether s fetches or uploads a cache, and how.
func (c *catalog) identify(t *task, s *step) *cacheStep {
	if s.ref != nil {
		name, where := refTarget(s.ref)
		kindOf := func(x string) string {
			switch {
			case strings.Contains(x, "cache-fetch"):
				return "fetch"
			case strings.Contains(x, "cache-upload"):
				return "upload"
			}
			return ""
		}
		var a *action
		if name != "" {
			if v, ok := c.vendored[name]; ok {
				a = v.act
			} else if k := kindOf(name); k == "fetch" {
				a = oursFetch
			} else if k == "upload" {
				a = oursUpload
			}
		} else if k := kindOf(where); k != "" {
			ref := strings.Contains(where, "tekton-caches") || strings.Contains(where, "openshift-pipelines")
			old := ref && regexp.MustCompile(`v0\.1\b|osp-v1\.1[0-8]\b`).MatchString(where)
			if ref && !old && passesCamel(s) {
				old = true
			}
			switch {
			case !ref && k == "fetch":
				a = oursFetch
			case !ref:
				a = oursUpload
			case old && k == "fetch":
				a = refFetchV1
			case old:
				a = refUploadV1
			case k == "fetch":
				a = refFetch
			default:
				a = refUpload
			}
		}
		if a == nil {
			return nil
		}
		cs := &cacheStep{kind: a.kind, action: a, reference: a.reference, vals: map[string][]string{}, nodes: map[string]*yaml.Node{}}
		if name == "" {
			cs.remote = s.ref
		}
		for _, p := range s.params {
			for role, n := range a.role {
				// An old name still says what the step means (unknown-param reports it).
				if p.name == n || renamed[p.name] == n && !a.params[p.name] {
					cs.vals[role], cs.nodes[role] = p.vals, p.valNode
				}
			}
		}
		return cs
	}
	return scriptStep(s)
}

// passesCamel tells whether a step passes the reference tool's old params.
func passesCamel(s *step) bool {
	camel, upper := 0, 0
	for _, p := range s.params {
		if _, ok := renamed[p.name]; ok && p.name != strings.ToUpper(p.name) {
			camel++
		} else if p.name == strings.ToUpper(p.name) {
			upper++
		}
	}
	return camel > upper
}

// cacheFlags maps the CLI's flags (and their CACHE_* variables) to roles.
var cacheFlags = map[string]string{"pattern": "patterns", "source": "store", "target": "store", "store": "store",
	"folder": "path", "workingdir": "wd", "key": "key", "fetched": "fetched", "restore-keys": "restore",
	"insecure": "insecure", "force": "force"}

// scriptStep reads a step that runs the cache binary: its command and
// args, or a script line, plus the CACHE_* variables it sets.
func scriptStep(s *step) *cacheStep {
	line := strings.Join(s.command, " ")
	node := get(s.node, "command")
	if !cacheCall.MatchString(line) {
		line, node = "", s.scriptNode
		for _, l := range strings.Split(s.script, "\n") {
			if cacheCall.MatchString(l) {
				line = l
				break
			}
		}
	}
	m := cacheCall.FindStringSubmatch(line)
	if m == nil {
		return nil
	}
	cs := &cacheStep{kind: "upload", vals: map[string][]string{}, nodes: map[string]*yaml.Node{}}
	if m[1] == "fetch" || m[1] == "restore" {
		cs.kind = "fetch"
	}
	for _, e := range s.env {
		if f, ok := strings.CutPrefix(e.name, "CACHE_"); ok {
			if role, ok := cacheFlags[strings.ReplaceAll(strings.ToLower(f), "_", "-")]; ok {
				cs.vals[role] = splitValue(role, e.value)
				cs.nodes[role] = e.node
			}
		}
	}
	words := strings.Fields(line[strings.Index(line, m[0])+len(m[0]):])
	for i := 0; i < len(words); i++ {
		w := strings.Trim(words[i], `"'`)
		name, isFlag := strings.CutPrefix(w, "--")
		if !isFlag {
			continue
		}
		val := ""
		if n, v, ok := strings.Cut(name, "="); ok {
			name, val = n, v
		} else if i+1 < len(words) && !strings.HasPrefix(words[i+1], "-") {
			val = strings.Trim(words[i+1], `"'`)
			i++
		}
		if role, ok := cacheFlags[name]; ok {
			if role == "patterns" {
				cs.vals[role] = append(cs.vals[role], val)
			} else {
				cs.vals[role] = splitValue(role, val)
			}
			cs.nodes[role] = node
		}
	}
	return cs
}

func splitValue(role, v string) []string {
	if role == "patterns" || role == "path" || role == "restore" {
		return splitFolders(v)
	}
	return []string{v}
}
