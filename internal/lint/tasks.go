package lint

import (
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// scope resolves $(params.X) where the value is known: the param's default,
// or what the enclosing Pipeline task, Pipeline or run passes.
type scope struct {
	values map[string][]string // known values (a string param has one)
	parent *scope
}

func (s *scope) lookup(name string) ([]string, bool) {
	if s == nil {
		return nil, false
	}
	v, ok := s.values[name]
	return v, ok
}

var paramRef = regexp.MustCompile(`\$\(params\.([A-Za-z0-9_.-]+?)(\[\*\])?\)`)

// resolve replaces the $(params.X) it knows in v.
func (s *scope) resolve(v string) string {
	for range 4 { // a few levels of params passed along
		nv := paramRef.ReplaceAllStringFunc(v, func(m string) string {
			sm := paramRef.FindStringSubmatch(m)
			if vals, ok := s.lookup(sm[1]); ok && len(vals) == 1 {
				return vals[0]
			}
			return m
		})
		if nv == v {
			break
		}
		v = nv
	}
	return v
}

// resolveAll resolves a list, expanding a whole-value $(params.X[*]).
func (s *scope) resolveAll(vs []string) []string {
	var out []string
	for _, v := range vs {
		if m := paramRef.FindStringSubmatch(v); m != nil && m[0] == v {
			if vals, ok := s.lookup(m[1]); ok {
				out = append(out, vals...) // resolved when stored
				continue
			}
		}
		out = append(out, s.resolve(v))
	}
	return out
}

// child is a scope whose values are the params declared at n (a params
// list with defaults) overridden by given (a params list with values),
// each resolved in s.
func (s *scope) child(decl, given *yaml.Node) *scope {
	c := &scope{values: map[string][]string{}, parent: s}
	for _, p := range items(decl) {
		if d := get(p, "default"); d != nil {
			c.values[str(get(p, "name"))] = s.resolveAll(values(d))
		}
	}
	for _, p := range items(given) {
		if v := get(p, "value"); v != nil {
			c.values[str(get(p, "name"))] = s.resolveAll(values(v))
		}
	}
	return c
}

// envVar is one environment variable a step sets.
type envVar struct {
	name  string
	value string // resolved
	node  *yaml.Node
}

// param is one param a step passes to its StepAction.
type param struct {
	name     string
	nameNode *yaml.Node
	valNode  *yaml.Node
	vals     []string // resolved
}

// step is one step of a Task.
type step struct {
	name       string
	node       *yaml.Node
	image      string // resolved
	imageNode  *yaml.Node
	script     string
	scriptNode *yaml.Node
	command    []string // command and args, resolved
	env        []envVar // the stepTemplate's, then the step's
	params     []param
	ref        *yaml.Node
	results    map[string]bool
	cache      *cacheStep
}

func (s *step) envValue(name string) (envVar, bool) {
	var out envVar
	found := false
	for _, e := range s.env {
		if e.name == name {
			out, found = e, true // the step's own wins over the template's
		}
	}
	return out, found
}

// task is one Task spec (a Task, a TaskRun's or a Pipeline task's taskSpec).
type task struct {
	doc        *document
	name       string // for messages
	spec       *yaml.Node
	scope      *scope
	params     map[string]*yaml.Node
	results    map[string]bool
	workspaces map[string]bool
	steps      []*step
	stepByName map[string]*step
	stepAction bool // a StepAction document, linted for its script only
}

// pipeline is a Pipeline spec (a Pipeline's or a PipelineRun's pipelineSpec).
type pipeline struct {
	doc    *document
	spec   *yaml.Node
	scope  *scope
	params map[string]bool
	tasks  map[string]*yaml.Node // pipeline task name -> its node
	// taskResults lists the results of the tasks whose spec is known.
	taskResults map[string]map[string]bool
}

func newTask(d *document, name string, spec *yaml.Node, sc *scope, catalog *catalog) *task {
	t := &task{doc: d, name: name, spec: spec, scope: sc, params: map[string]*yaml.Node{}, results: map[string]bool{},
		workspaces: map[string]bool{}, stepByName: map[string]*step{}}
	for _, p := range items(get(spec, "params")) {
		t.params[str(get(p, "name"))] = p
	}
	for _, r := range items(get(spec, "results")) {
		t.results[str(get(r, "name"))] = true
	}
	for _, w := range items(get(spec, "workspaces")) {
		t.workspaces[str(get(w, "name"))] = true
	}
	var tmplEnv []envVar
	for _, e := range items(path(spec, "stepTemplate", "env")) {
		tmplEnv = append(tmplEnv, envVar{name: str(get(e, "name")), value: sc.resolve(str(get(e, "value"))), node: get(e, "name")})
	}
	for _, sn := range items(get(spec, "steps")) {
		s := &step{name: str(get(sn, "name")), node: sn, imageNode: get(sn, "image"), scriptNode: get(sn, "script"),
			ref: get(sn, "ref"), results: map[string]bool{}}
		s.image = sc.resolve(str(s.imageNode))
		s.script = str(s.scriptNode)
		s.command = append(sc.resolveAll(values(get(sn, "command"))), sc.resolveAll(values(get(sn, "args")))...)
		s.env = append(s.env, tmplEnv...)
		for _, e := range items(get(sn, "env")) {
			s.env = append(s.env, envVar{name: str(get(e, "name")), value: sc.resolve(str(get(e, "value"))), node: get(e, "name")})
		}
		for _, p := range items(get(sn, "params")) {
			v := get(p, "value")
			s.params = append(s.params, param{name: str(get(p, "name")), nameNode: get(p, "name"), valNode: v, vals: sc.resolveAll(values(v))})
		}
		for _, r := range items(get(sn, "results")) {
			s.results[str(get(r, "name"))] = true
		}
		s.cache = catalog.identify(t, s)
		if s.cache != nil && s.cache.action != nil {
			for r := range s.cache.action.results {
				s.results[r] = true
			}
		}
		t.steps = append(t.steps, s)
		if s.name != "" {
			t.stepByName[s.name] = s
		}
	}
	return t
}

// collect builds the tasks and pipelines of the documents.
func collect(docs []*document, cat *catalog) ([]*task, []*pipeline) {
	var tasks []*task
	var pipes []*pipeline
	root := &scope{values: map[string][]string{}}
	addPipeline := func(d *document, spec *yaml.Node, sc *scope) {
		p := &pipeline{doc: d, spec: spec, scope: sc, params: map[string]bool{}, tasks: map[string]*yaml.Node{},
			taskResults: map[string]map[string]bool{}}
		for _, pp := range items(get(spec, "params")) {
			p.params[str(get(pp, "name"))] = true
		}
		for _, list := range []string{"tasks", "finally"} {
			for _, pt := range items(get(spec, list)) {
				name := str(get(pt, "name"))
				p.tasks[name] = pt
				ts := get(pt, "taskSpec")
				if ts == nil {
					continue
				}
				t := newTask(d, name, ts, sc.child(get(ts, "params"), get(pt, "params")), cat)
				tasks = append(tasks, t)
				p.taskResults[name] = t.results
			}
		}
		pipes = append(pipes, p)
	}
	for _, d := range docs {
		spec := get(d.root, "spec")
		switch d.kind {
		case "Task", "ClusterTask":
			tasks = append(tasks, newTask(d, d.name, spec, root.child(get(spec, "params"), nil), cat))
		case "TaskRun":
			if ts := get(spec, "taskSpec"); ts != nil {
				run := root.child(nil, get(spec, "params"))
				tasks = append(tasks, newTask(d, d.name, ts, run.child(get(ts, "params"), get(spec, "params")), cat))
			}
		case "Pipeline":
			addPipeline(d, spec, root.child(get(spec, "params"), nil))
		case "PipelineRun":
			if ps := get(spec, "pipelineSpec"); ps != nil {
				addPipeline(d, ps, root.child(get(ps, "params"), get(spec, "params")))
			}
		case "StepAction":
			// A StepAction is linted as a Task of one step: its script.
			t := &task{doc: d, name: d.name, spec: spec, scope: root.child(get(spec, "params"), nil), params: map[string]*yaml.Node{},
				results: map[string]bool{}, workspaces: map[string]bool{}, stepByName: map[string]*step{}}
			for _, p := range items(get(spec, "params")) {
				t.params[str(get(p, "name"))] = p
			}
			s := &step{name: d.name, node: spec, imageNode: get(spec, "image"), scriptNode: get(spec, "script"), results: map[string]bool{}}
			s.image, s.script = str(s.imageNode), str(s.scriptNode)
			t.steps = []*step{s}
			t.stepAction = true
			tasks = append(tasks, t)
		}
	}
	return tasks, pipes
}

// splitFolders splits a CACHE_PATH value: one per line, or comma-separated.
func splitFolders(v string) []string {
	var out []string
	sep := ","
	if strings.Contains(v, "\n") {
		sep = "\n"
	}
	for _, f := range strings.Split(v, sep) {
		if f = strings.TrimRight(strings.TrimSpace(f), "/"); f != "" {
			out = append(out, f)
		}
	}
	return out
}
