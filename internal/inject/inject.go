// Package inject adds cache steps to a Tekton Pipeline: each task and
// finally task that binds a cached workspace gets its spec embedded, a
// cache-fetch step first and a cache-upload step last per cached
// workspace, and annotations that say what was added. It works on YAML
// nodes (go.yaml.in/yaml/v3), not Tekton's Go types, so that the `cache`
// binary carries no Tekton or Kubernetes code and the output keeps the
// input's field order and comments; `cache inject` and the resolver
// (module resolver/) share it, and Tekton's own validation of every
// output runs in the test modules.
package inject

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Modes: how an injected step runs the cache.
const (
	// ModeInline inlines the StepAction's image, env, args and script: the
	// Pipeline needs nothing installed in the namespace.
	ModeInline = "inline"
	// ModeStepAction refers to the cache-fetch and cache-upload
	// StepActions, which must be installed in the namespace.
	ModeStepAction = "stepaction"
)

// Annotations the rewrite sets. On the Pipeline (or PipelineRun):
// AnnotationBy, AnnotationFrom, AnnotationTasks, AnnotationWarning. On each
// rewritten task's embedded spec: AnnotationWorkspaces, AnnotationSteps and,
// for a taskRef, AnnotationTask.
const (
	AnnotationBy         = "tekton-cache.dev/rewritten-by"
	AnnotationFrom       = "tekton-cache.dev/rewritten-from"
	AnnotationTasks      = "tekton-cache.dev/cached-tasks"
	AnnotationWarning    = "tekton-cache.dev/warning"
	AnnotationWorkspaces = "tekton-cache.dev/cached-workspaces"
	AnnotationSteps      = "tekton-cache.dev/added-steps"
	AnnotationTask       = "tekton-cache.dev/from-task"
)

// Options say what to cache and where.
type Options struct {
	// Workspaces are the Pipeline's workspaces to cache (bind them to
	// emptyDir in the PipelineRun).
	Workspaces []string
	// Files are the lock-file patterns the key's {{hash}} is computed from,
	// relative to the source workspace. Empty: detected from the lock files
	// found.
	Files []string
	// Source is the Pipeline workspace the lock files live in. Empty: each
	// task's first bound workspace that is not cached.
	Source string
	// Target is the store URL template: {{workspace}} becomes the cached
	// workspace's name, {{hash}} the lock files' hash (at run time).
	Target string
	// RestoreKeys are key prefixes tried when the exact key misses;
	// {{workspace}} is replaced as in Target.
	RestoreKeys []string
	// Image runs the inlined steps (ModeInline).
	Image string
	// Mode is ModeInline (the default) or ModeStepAction.
	Mode string
	// Insecure lets the steps use a plain-HTTP or self-signed store.
	Insecure bool
	// By and From fill AnnotationBy and AnnotationFrom ("cache inject
	// v0.2.0"; "Pipeline build-go in namespace ci"); empty: not set.
	By, From string
}

// Validate says what is wrong with o, in terms of its fields.
func (o *Options) Validate() error {
	if len(o.Workspaces) == 0 {
		return errors.New("no workspaces to cache: name the Pipeline workspaces, e.g. go-cache,gomod-cache")
	}
	seen := map[string]bool{}
	for _, w := range o.Workspaces {
		if w == "" || strings.ContainsAny(w, " \t\n,") {
			return fmt.Errorf("workspace %q: give workspace names, comma-separated", w)
		}
		if seen[w] {
			return fmt.Errorf("workspace %q is named twice", w)
		}
		seen[w] = true
	}
	if seen[o.Source] {
		return fmt.Errorf("source workspace %q is also cached: the lock files must live in a workspace that is not cached", o.Source)
	}
	if o.Target == "" {
		return errors.New("no target: give the store URL template, e.g. oci://registry.example.com/cache/{{workspace}}:{{hash}}")
	}
	if !strings.Contains(o.Target, "://") {
		return fmt.Errorf("target %q is not a store URL (oci://, s3://, gs://, azblob://, http(s)://, file://)", o.Target)
	}
	if len(o.Workspaces) > 1 && !strings.Contains(o.Target, "{{workspace}}") {
		return fmt.Errorf("target %q has no {{workspace}}: every cached workspace would be saved under the same key", o.Target)
	}
	switch o.Mode {
	case "", ModeInline:
		if o.Image == "" {
			return errors.New("no image for the inlined cache steps: give the cache image (or use the stepaction mode)")
		}
	case ModeStepAction:
	default:
		return fmt.Errorf("mode %q: use %s or %s", o.Mode, ModeInline, ModeStepAction)
	}
	return nil
}

// Tasks returns the YAML (or JSON) of the Task a taskRef names: the
// resolver reads it from the request's namespace, `cache inject` from the
// files it was given.
type Tasks func(name string) ([]byte, error)

// Skipped is a task that binds a cached workspace but was left as it was.
type Skipped struct {
	Task, Reason string
}

// Report says what a rewrite did.
type Report struct {
	// Tasks are the pipeline tasks (and finally tasks) that got cache steps.
	Tasks []string
	// Steps are the steps added, "task/step".
	Steps []string
	// Skipped are the tasks left as they were, with why.
	Skipped []Skipped
}

// Warnings returns one line per skipped task.
func (r *Report) Warnings() []string {
	var out []string
	for _, s := range r.Skipped {
		out = append(out, fmt.Sprintf("task %s: %s", s.Task, s.Reason))
	}
	return out
}

// Decode returns the YAML documents of data, empty ones left out.
func Decode(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(n.Content) > 0 && n.Content[0].Kind != yaml.ScalarNode {
			docs = append(docs, &n)
		}
	}
}

// Encode writes docs as one YAML stream, two-space indented.
func Encode(w io.Writer, docs ...*yaml.Node) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return err
		}
	}
	return enc.Close()
}

// Kind returns a document's apiVersion and kind.
func Kind(doc *yaml.Node) (apiVersion, kind string) {
	root := docRoot(doc)
	return scalar(get(root, "apiVersion")), scalar(get(root, "kind"))
}

// Name returns a document's metadata.name (or generateName).
func Name(doc *yaml.Node) string {
	md := get(docRoot(doc), "metadata")
	if n := scalar(get(md, "name")); n != "" {
		return n
	}
	return scalar(get(md, "generateName"))
}

// HasPipelineSpec tells whether a PipelineRun embeds its Pipeline.
func HasPipelineSpec(doc *yaml.Node) bool {
	return get(get(docRoot(doc), "spec"), "pipelineSpec") != nil
}

// RewriteYAML rewrites the one Pipeline or PipelineRun in data.
func RewriteYAML(data []byte, o Options, tasks Tasks) ([]byte, *Report, error) {
	docs, err := Decode(data)
	if err != nil {
		return nil, nil, err
	}
	if len(docs) != 1 {
		return nil, nil, fmt.Errorf("want one Pipeline, got %d documents", len(docs))
	}
	rep, err := Rewrite(docs[0], o, tasks)
	if err != nil {
		return nil, nil, err
	}
	var b bytes.Buffer
	if err := Encode(&b, docs[0]); err != nil {
		return nil, nil, err
	}
	return b.Bytes(), rep, nil
}

// Rewrite adds the cache steps to doc, a tekton.dev/v1 Pipeline or a
// PipelineRun with an embedded pipelineSpec, in place. A failed rewrite
// leaves doc as it was.
func Rewrite(doc *yaml.Node, o Options, tasks Tasks) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Mode == "" {
		o.Mode = ModeInline
	}
	work := deepCopy(doc)
	root := docRoot(work)
	if root == nil || root.Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping: want a Tekton Pipeline or PipelineRun")
	}
	apiVersion, kind := Kind(work)
	name := Name(work)
	if apiVersion != "tekton.dev/v1" || (kind != "Pipeline" && kind != "PipelineRun") {
		return nil, fmt.Errorf("%s %s %s: want a tekton.dev/v1 Pipeline or PipelineRun", apiVersion, kind, name)
	}
	spec := get(root, "spec")
	if kind == "PipelineRun" {
		spec = get(spec, "pipelineSpec")
		if spec == nil {
			return nil, fmt.Errorf("PipelineRun %s has no embedded pipelineSpec: rewrite its Pipeline instead", name)
		}
	}
	if spec == nil || spec.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s %s has no spec", kind, name)
	}
	declared := map[string]bool{}
	for _, w := range items(get(spec, "workspaces")) {
		declared[scalar(get(w, "name"))] = true
	}
	for _, w := range append(slices.Clone(o.Workspaces), o.Source) {
		if w != "" && !declared[w] {
			return nil, fmt.Errorf("%s %s declares no workspace %q (it has %s)", kind, name, w, strings.Join(sortedKeys(declared), ", "))
		}
	}
	rep := &Report{}
	for _, list := range []string{"tasks", "finally"} {
		for _, pt := range items(get(spec, list)) {
			if err := rewriteTask(pt, &o, tasks, rep); err != nil {
				return nil, fmt.Errorf("%s %s: task %s: %w", kind, name, scalar(get(pt, "name")), err)
			}
		}
	}
	if len(rep.Tasks) == 0 && len(rep.Skipped) == 0 {
		return nil, fmt.Errorf("%s %s: no task binds %s", kind, name, strings.Join(o.Workspaces, " or "))
	}
	ann := map[string]string{AnnotationBy: o.By, AnnotationFrom: o.From, AnnotationTasks: strings.Join(rep.Tasks, ",")}
	ann[AnnotationWarning] = strings.Join(rep.Warnings(), "; ")
	setAnnotations(root, ann)
	*doc = *work
	return rep, nil
}

// binding is a pipeline task's workspace: its name in the task, and the
// Pipeline workspace bound to it.
type binding struct{ task, pipeline string }

func rewriteTask(pt *yaml.Node, o *Options, tasks Tasks, rep *Report) error {
	name := scalar(get(pt, "name"))
	var bound []binding
	for _, w := range items(get(pt, "workspaces")) {
		b := binding{task: scalar(get(w, "name")), pipeline: scalar(get(w, "workspace"))}
		if b.pipeline == "" {
			b.pipeline = b.task // Tekton's default: the same name
		}
		bound = append(bound, b)
	}
	var cached []binding
	for _, w := range o.Workspaces {
		for _, b := range bound {
			if b.pipeline == w {
				cached = append(cached, b)
			}
		}
	}
	if len(cached) == 0 {
		return nil
	}
	skip := func(reason string) error {
		rep.Skipped = append(rep.Skipped, Skipped{Task: name, Reason: reason})
		return nil
	}
	source := ""
	for _, b := range bound {
		if (o.Source != "" && b.pipeline == o.Source) || (o.Source == "" && !slices.Contains(o.Workspaces, b.pipeline)) {
			source = b.task
			break
		}
	}
	if source == "" {
		if o.Source != "" {
			return skip(fmt.Sprintf("does not bind the source workspace %s, which holds the lock files: not rewritten", o.Source))
		}
		return skip("binds no workspace besides the cached ones to find the lock files in: not rewritten (bind the source)")
	}
	ts, fromTask, reason, err := taskSpec(pt, tasks)
	if err != nil || reason != "" {
		if err == nil {
			err = skip(reason)
		}
		return err
	}
	declared, optional := map[string]bool{}, map[string]bool{}
	for _, w := range items(get(ts, "workspaces")) {
		declared[scalar(get(w, "name"))] = true
		optional[scalar(get(w, "name"))] = scalar(get(w, "optional")) == "true"
	}
	for _, b := range append(cached, binding{task: source}) {
		if !declared[b.task] {
			return fmt.Errorf("binds workspace %s, which its task does not declare", b.task)
		}
	}
	steps := get(ts, "steps")
	if steps == nil || steps.Kind != yaml.SequenceNode {
		return errors.New("its task has no steps")
	}
	taken := map[string]bool{}
	for _, s := range steps.Content {
		taken[scalar(get(s, "name"))] = true
	}
	var fetches, uploads []*yaml.Node
	var added []string
	for _, b := range cached {
		fetch, upload, err := cacheSteps(o, b, source, optional[b.task], taken)
		if err != nil {
			return err
		}
		fetches, uploads = append(fetches, fetch), append(uploads, upload)
		added = append(added, scalar(get(fetch, "name")), scalar(get(upload, "name")))
	}
	steps.Content = append(append(fetches, steps.Content...), uploads...)
	var ws []string
	for _, b := range cached {
		ws = append(ws, b.pipeline)
	}
	ann := map[string]string{AnnotationWorkspaces: strings.Join(ws, ","), AnnotationSteps: strings.Join(added, ","), AnnotationTask: fromTask}
	setAnnotations(ts, ann)
	rep.Tasks = append(rep.Tasks, name)
	for _, s := range added {
		rep.Steps = append(rep.Steps, name+"/"+s)
	}
	return nil
}

// taskSpec returns the pipeline task's embedded spec, embedding the Task a
// taskRef names first (fromTask is its name). A task this cannot rewrite
// (a remote or custom task) gives a reason.
func taskSpec(pt *yaml.Node, tasks Tasks) (ts *yaml.Node, fromTask, reason string, err error) {
	if ts := get(pt, "taskSpec"); ts != nil {
		if ts.Kind != yaml.MappingNode {
			return nil, "", "", errors.New("taskSpec is not a mapping")
		}
		if av, k := scalar(get(ts, "apiVersion")), scalar(get(ts, "kind")); av != "" || k != "" {
			return nil, "", fmt.Sprintf("is a custom task (%s %s): not rewritten", av, k), nil
		}
		return ts, "", "", nil
	}
	ref := get(pt, "taskRef")
	if ref == nil {
		return nil, "", "", errors.New("has neither taskRef nor taskSpec")
	}
	if r := scalar(get(ref, "resolver")); r != "" {
		return nil, "", fmt.Sprintf("taskRef through the %s resolver: not rewritten, its steps get no cache", r), nil
	}
	if av, k := scalar(get(ref, "apiVersion")), scalar(get(ref, "kind")); av != "" || (k != "" && k != "Task") {
		return nil, "", fmt.Sprintf("is a custom task (%s %s): not rewritten", av, k), nil
	}
	taskName := scalar(get(ref, "name"))
	if taskName == "" {
		return nil, "", "", errors.New("taskRef has no name")
	}
	if tasks == nil {
		return nil, "", "", fmt.Errorf("refers to Task %s, which was not given", taskName)
	}
	data, err := tasks(taskName)
	if err != nil {
		return nil, "", "", err
	}
	docs, err := Decode(data)
	if err != nil || len(docs) != 1 {
		return nil, "", "", fmt.Errorf("Task %s: not one YAML document (%v)", taskName, err)
	}
	if av, k := Kind(docs[0]); av != "tekton.dev/v1" || k != "Task" {
		return nil, "", "", fmt.Errorf("Task %s is %s %s: want a tekton.dev/v1 Task", taskName, av, k)
	}
	spec := get(docRoot(docs[0]), "spec")
	if spec == nil || spec.Kind != yaml.MappingNode {
		return nil, "", "", fmt.Errorf("Task %s has no spec", taskName)
	}
	// The taskRef's place, now the embedded spec.
	for i := 0; i+1 < len(pt.Content); i += 2 {
		if pt.Content[i].Value == "taskRef" {
			pt.Content[i] = str("taskSpec")
			pt.Content[i+1] = spec
		}
	}
	return spec, taskName, "", nil
}

// cacheSteps returns the fetch and upload steps of one cached workspace;
// for an optional one, they run only when it is bound.
func cacheSteps(o *Options, b binding, source string, optional bool, taken map[string]bool) (fetch, upload *yaml.Node, err error) {
	fetchName := stepName("cache-fetch-"+b.task, taken)
	uploadName := stepName("cache-upload-"+b.task, taken)
	target := strings.ReplaceAll(o.Target, "{{workspace}}", b.pipeline)
	var restore []string
	for _, k := range o.RestoreKeys {
		restore = append(restore, strings.ReplaceAll(k, "{{workspace}}", b.pipeline))
	}
	common := func(v values) values {
		v["CACHE_PATH"] = "$(workspaces." + b.task + ".path)"
		v["WORKING_DIR"] = "$(workspaces." + source + ".path)"
		v["PATTERNS"] = append([]string{}, o.Files...)
		v["RESTORE_KEYS"] = strings.Join(restore, ",")
		v["INSECURE"] = fmt.Sprint(o.Insecure)
		return v
	}
	fetchAction, uploadAction := stepActions()
	fs, err := fetchAction.build(fetchName, o.Mode, o.Image, common(values{"SOURCE": target}))
	if err != nil {
		return nil, nil, err
	}
	us, err := uploadAction.build(uploadName, o.Mode, o.Image, common(values{
		"TARGET":  target,
		"KEY":     "$(steps." + fetchName + ".results.key)",
		"FETCHED": "$(steps." + fetchName + ".results.fetched)",
	}))
	if err != nil {
		return nil, nil, err
	}
	if optional {
		fs.When = []when{{Input: "$(workspaces." + b.task + ".bound)", Operator: "in", Values: []string{"true"}}}
		us.When = fs.When
	}
	fetch, upload = &yaml.Node{}, &yaml.Node{}
	if err := fetch.Encode(fs); err != nil {
		return nil, nil, err
	}
	if err := upload.Encode(us); err != nil {
		return nil, nil, err
	}
	return fetch, upload, nil
}

// setAnnotations merges the non-empty values of ann into m's
// metadata.annotations, in sorted key order, creating what is missing.
func setAnnotations(m *yaml.Node, ann map[string]string) {
	var keys []string
	for k, v := range ann {
		if v != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	slices.Sort(keys)
	md := get(m, "metadata")
	if md == nil {
		md = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		// metadata goes first, where a reader looks for it.
		m.Content = append([]*yaml.Node{str("metadata"), md}, m.Content...)
	}
	a := get(md, "annotations")
	if a == nil || a.Kind != yaml.MappingNode {
		a = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		set(md, "annotations", a)
	}
	for _, k := range keys {
		set(a, k, str(ann[k]))
	}
}

func docRoot(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return n.Content[0]
	}
	return n
}

// get returns the value of key in mapping m (nil when m is not a mapping
// or has no such key).
func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// set replaces the value of key in mapping m, or appends the pair.
func set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, str(key), v)
}

func items(seq *yaml.Node) []*yaml.Node {
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return nil
	}
	return seq.Content
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func deepCopy(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, k := range n.Content {
		c.Content[i] = deepCopy(k)
	}
	c.Alias = deepCopy(n.Alias)
	return &c
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
