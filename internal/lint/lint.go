package lint

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Severity of a finding.
type Severity string

// Severities, most severe first.
const (
	Error   Severity = "error"
	Warning Severity = "warning"
)

// Finding is one problem, where it is, and how to fix it.
type Finding struct {
	File     string   `json:"file"`
	Line     int      `json:"line"`
	Column   int      `json:"column"`
	Severity Severity `json:"severity"`
	Rule     string   `json:"rule"`
	Message  string   `json:"message"`
	Fix      string   `json:"fix"`
}

// String is the text form: file:line:col: severity rule-id: message; fix.
func (f Finding) String() string {
	return fmt.Sprintf("%s:%d:%d: %s %s: %s; fix: %s", f.File, f.Line, f.Column, f.Severity, f.Rule, f.Message, f.Fix)
}

// Rule is a check's id, severity and summary (docs/LINT.md explains each).
type Rule struct {
	ID       string
	Severity Severity
	Summary  string
}

// Rules lists every rule.
var Rules = []Rule{
	{"unknown-param", Error, "a param the referenced StepAction does not declare (an old name, a typo)"},
	{"missing-param", Error, "a param the StepAction requires is not passed"},
	{"bad-reference", Error, "a reference to a result, param or workspace that does not exist, or of the wrong kind"},
	{"upload-without-fetched", Warning, "an upload step that gets no FETCHED, next to a fetch step"},
	{"cache-var-typo", Error, "a cache variable misspelt"},
	{"cache-var-missing", Warning, "a tool runs without the variable that puts its cache in a restored folder"},
	{"cache-var-outside", Warning, "a cache variable that points outside every folder a fetch restores"},
	{"pattern-dialect", Warning, "a pattern in the reference tool's dialect that means something else as a glob (**go.mod)"},
	{"pattern-absolute", Warning, "an absolute pattern"},
	{"pattern-key-drift", Warning, "with the reference tool, a pattern that can match files inside the cached folders"},
	{"key-mismatch", Warning, "fetch and upload compute their keys differently (patterns, working dir, store, no shared KEY)"},
	{"frozen-cache", Warning, "a build cache that can never refresh: an exact-hit skip on a lock-file key without restore keys"},
	{"floating-image", Warning, "a toolchain image with a floating tag writing into a restored cache"},
	{"toolchain-mix", Warning, "two versions of one toolchain image sharing one cache"},
	{"toolchain-download", Warning, "toolchain auto-download writing into the cached module cache"},
	{"vendored-modules", Warning, "a module cache for a repository that vendors its modules"},
	{"unpinned-stepaction", Warning, "a remote cache StepAction that is not pinned to a version"},
	{"param-in-script", Error, "a param, result or context value spliced into a script"},
	{"shell-bashism", Warning, "shell that breaks under sh"},
	{"insecure-registry", Warning, "an in-cluster registry used without INSECURE or a CA"},
	{"image-unpullable", Error, "a StepAction whose image cannot be pulled (ko://)"},
}

func ruleOf(id string) Rule {
	for _, r := range Rules {
		if r.ID == id {
			return r
		}
	}
	panic("lint: unknown rule " + id)
}

// Options tune a lint run.
type Options struct {
	// WorkDir is a checkout of the repository the pipelines build; rules
	// that need the sources (vendored-modules) read it. Empty: skipped.
	WorkDir string
	// Disable lists rule ids not to report.
	Disable []string
}

// linter collects findings.
type linter struct {
	opts     Options
	findings []Finding
	docs     map[string]*document // by file, for disable comments
}

func (l *linter) report(d *document, n *yaml.Node, id, msg, fix string) {
	p := at(d.file, n)
	if slices.Contains(l.opts.Disable, id) || disabledAt(d, p.line, id) {
		return
	}
	l.findings = append(l.findings, Finding{File: p.file, Line: p.line, Column: p.col, Severity: ruleOf(id).Severity,
		Rule: id, Message: msg, Fix: fix})
}

func disabledAt(d *document, line int, id string) bool {
	has := func(ids []string) bool { return slices.Contains(ids, id) || slices.Contains(ids, "*") }
	return has(d.fileDisabled) || has(d.disabled[line])
}

// Lint reads the files (or directories of them) and returns the findings,
// sorted by file and position.
func Lint(paths []string, o Options) ([]Finding, error) {
	files, err := Files(paths)
	if err != nil {
		return nil, err
	}
	var docs []*document
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		ds, err := parseFile(f, data)
		if err != nil {
			return nil, err
		}
		docs = append(docs, ds...)
	}
	for _, id := range o.Disable {
		if !slices.ContainsFunc(Rules, func(r Rule) bool { return r.ID == id }) {
			return nil, fmt.Errorf("--disable %s: no such rule; see cache lint --list-rules", id)
		}
	}
	l := &linter{opts: o}
	cat := newCatalog(docs)
	tasks, pipes := collect(docs, cat)
	for _, t := range tasks {
		l.checkTask(t)
	}
	for _, p := range pipes {
		l.checkPipeline(p)
	}
	for _, v := range cat.vendored {
		l.checkStepActionImage(v)
	}
	sort.SliceStable(l.findings, func(i, j int) bool {
		a, b := l.findings[i], l.findings[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		return a.Rule < b.Rule
	})
	return slices.CompactFunc(l.findings, func(a, b Finding) bool { return a == b }), nil
}

// HasErrors tells whether any finding is an error.
func HasErrors(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity == Error })
}

// quoted joins names for a message.
func quoted(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = n
	}
	return strings.Join(q, ", ")
}
