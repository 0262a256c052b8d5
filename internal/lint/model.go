// Package lint reads Tekton YAML (Pipeline, PipelineRun, Task, TaskRun,
// StepAction; several documents per file) and reports the mistakes that
// make a CI cache miss or go stale: params a cache StepAction does not
// declare, results that do not exist, cache variables misspelt or pointing
// outside the restored folders, patterns in another dialect, fetch and
// upload computing different keys, and more (docs/LINT.md lists every rule).
//
// It reads YAML with positions (yaml.v3 nodes) into a small model of its
// own rather than tektoncd/pipeline's types: those would pull Kubernetes'
// client libraries into the `cache` binary, and a lint needs the line and
// column of every value, which the typed structs lose.
package lint

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// pos is a place in a file.
type pos struct {
	file      string
	line, col int
}

func at(file string, n *yaml.Node) pos {
	if n == nil {
		return pos{file: file, line: 1, col: 1}
	}
	return pos{file: file, line: n.Line, col: n.Column}
}

// document is one YAML document of a file.
type document struct {
	file string
	root *yaml.Node // the mapping
	kind string
	name string
	// disabled maps a line to the rule ids disabled on it ("*" for all).
	disabled map[int][]string
	// fileDisabled are the rule ids disabled for the whole file.
	fileDisabled []string
	// pac is set for a file under a Pipelines-as-Code .tekton/ directory.
	pac bool
}

// kv is a mapping entry.
type kv struct{ key, val *yaml.Node }

// get returns the value of key in mapping n, or nil.
func get(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// keyNode returns the key node of key in mapping n, or nil.
func keyNode(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i]
		}
	}
	return nil
}

func path(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		n = get(n, k)
	}
	return n
}

func str(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func items(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	return n.Content
}

// values returns a scalar as one value and a sequence as its scalars.
func values(n *yaml.Node) []string {
	switch {
	case n == nil:
		return nil
	case n.Kind == yaml.ScalarNode:
		return []string{n.Value}
	case n.Kind == yaml.SequenceNode:
		var out []string
		for _, c := range n.Content {
			if c.Kind == yaml.ScalarNode {
				out = append(out, c.Value)
			}
		}
		return out
	}
	return nil
}

// disableRe matches an inline disable comment:
//
//	# cache-lint: disable=rule-id,other-id    (this line, or the next when alone)
//	# cache-lint: disable-file=rule-id        (the whole file)
var disableRe = regexp.MustCompile(`#\s*cache-lint:\s*(disable|disable-file)=([A-Za-z0-9_,*-]+)`)

// parseFile splits data into documents.
func parseFile(file string, data []byte) ([]*document, error) {
	dis, fileDis := disables(data)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*document
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: not valid YAML: %v", file, err)
		}
		if n.Kind != yaml.DocumentNode || len(n.Content) == 0 || n.Content[0].Kind != yaml.MappingNode {
			continue
		}
		root := n.Content[0]
		d := &document{file: file, root: root, kind: str(get(root, "kind")), name: str(path(root, "metadata", "name")),
			disabled: dis, fileDisabled: fileDis, pac: inPaC(file)}
		if d.name == "" {
			d.name = str(path(root, "metadata", "generateName"))
		}
		docs = append(docs, d)
	}
	return docs, nil
}

func inPaC(file string) bool {
	for _, el := range strings.Split(filepath.ToSlash(file), "/") {
		if el == ".tekton" {
			return true
		}
	}
	return false
}

// disables reads the disable comments of a file: a comment after YAML on
// its line applies to that line, a comment alone on its line to the next.
func disables(data []byte) (map[int][]string, []string) {
	out := map[int][]string{}
	var file []string
	for i, line := range strings.Split(string(data), "\n") {
		m := disableRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ids := strings.Split(m[2], ",")
		if m[1] == "disable-file" {
			file = append(file, ids...)
			continue
		}
		n := i + 1
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			n++ // alone on its line: the next line
		}
		out[n] = append(out[n], ids...)
	}
	return out, file
}

// Files expands paths (files or directories, walked for .yaml and .yml
// files) into a sorted list of files.
func Files(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: pass a Tekton YAML file or a directory of them", p, err)
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(q string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && q != p && (d.Name() == ".git" || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			if !d.IsDir() && (strings.HasSuffix(q, ".yaml") || strings.HasSuffix(q, ".yml")) {
				out = append(out, q)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}
