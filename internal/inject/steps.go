package inject

import (
	"fmt"
	"regexp"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/tekton-cache/tekton-cache/tekton"
)

// stepAction is the part of a shipped StepAction an inlined step copies.
type stepAction struct {
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Params []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Default any    `yaml:"default"`
		} `yaml:"params"`
		Results []result `yaml:"results"`
		Env     []envVar `yaml:"env"`
		Args    []string `yaml:"args"`
		Script  string   `yaml:"script"`
	} `yaml:"spec"`
}

type result struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description,omitempty"`
}

type envVar struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type param struct {
	Name  string `yaml:"name"`
	Value any    `yaml:"value"`
}

type stepRef struct {
	Name string `yaml:"name"`
}

type when struct {
	Input    string   `yaml:"input"`
	Operator string   `yaml:"operator"`
	Values   []string `yaml:"values,flow"`
}

// step is an injected step, in the field order the output shows.
type step struct {
	Name    string   `yaml:"name"`
	When    []when   `yaml:"when,omitempty"`
	Image   string   `yaml:"image,omitempty"`
	Ref     *stepRef `yaml:"ref,omitempty"`
	Params  []param  `yaml:"params,omitempty"`
	Env     []envVar `yaml:"env,omitempty"`
	Args    []string `yaml:"args,omitempty"`
	Results []result `yaml:"results,omitempty"`
	Script  string   `yaml:"script,omitempty"`
}

// stepActions parses the embedded StepActions once, when a Pipeline is
// first injected: at package init it cost every process of the binary
// (a save, a restore) about 1.5 ms of YAML parsing.
var stepActions = sync.OnceValues(func() (fetch, upload *stepAction) {
	return mustStepAction(tekton.FetchStepAction), mustStepAction(tekton.UploadStepAction)
})

func mustStepAction(data []byte) *stepAction {
	var sa stepAction
	if err := yaml.Unmarshal(data, &sa); err != nil {
		panic(fmt.Sprintf("inject: the embedded StepAction does not parse: %v", err))
	}
	if sa.Metadata.Name == "" || sa.Spec.Script == "" {
		panic("inject: the embedded StepAction has no name or script")
	}
	return &sa
}

// paramRef is a whole-value or embedded $(params.NAME) reference, and
// arrayRef an argument that expands a whole array param.
var (
	paramRef = regexp.MustCompile(`\$\(params\.([A-Za-z0-9_-]+)\)`)
	arrayRef = regexp.MustCompile(`^\$\(params\.([A-Za-z0-9_-]+)\[\*\]\)$`)
)

// values are the params given to a cache step: a string, or []string for an
// array param.
type values map[string]any

// build returns the step named name running sa with vals: a ref to the
// StepAction (stepaction mode, only the params given), or the StepAction's
// image, env, args, script and results inlined with the params filled in.
func (sa *stepAction) build(name, mode, image string, vals values) (step, error) {
	declared := map[string]bool{}
	for _, p := range sa.Spec.Params {
		declared[p.Name] = true
	}
	for k := range vals {
		if !declared[k] {
			return step{}, fmt.Errorf("StepAction %s has no param %s", sa.Metadata.Name, k)
		}
	}
	if mode == ModeStepAction {
		s := step{Name: name, Ref: &stepRef{Name: sa.Metadata.Name}}
		for _, p := range sa.Spec.Params {
			if v, ok := vals[p.Name]; ok {
				s.Params = append(s.Params, param{Name: p.Name, Value: v})
			}
		}
		return s, nil
	}
	value := func(name string) (any, error) {
		if v, ok := vals[name]; ok {
			return v, nil
		}
		for _, p := range sa.Spec.Params {
			if p.Name == name && p.Default != nil {
				return p.Default, nil
			}
		}
		return nil, fmt.Errorf("StepAction %s: param %s has no value and no default", sa.Metadata.Name, name)
	}
	s := step{Name: name, Image: image, Script: sa.Spec.Script}
	for _, r := range sa.Spec.Results {
		// The names alone: the StepAction documents them.
		s.Results = append(s.Results, result{Name: r.Name})
	}
	var err error
	subst := func(in string) string {
		return paramRef.ReplaceAllStringFunc(in, func(m string) string {
			v, verr := value(paramRef.FindStringSubmatch(m)[1])
			str, ok := v.(string)
			if verr == nil && !ok {
				verr = fmt.Errorf("StepAction %s: array param in %q", sa.Metadata.Name, in)
			}
			if verr != nil {
				err = verr
				return m
			}
			return str
		})
	}
	for _, e := range sa.Spec.Env {
		s.Env = append(s.Env, envVar{Name: e.Name, Value: subst(e.Value)})
	}
	for _, a := range sa.Spec.Args {
		if m := arrayRef.FindStringSubmatch(a); m != nil {
			v, verr := value(m[1])
			if verr != nil {
				return step{}, verr
			}
			s.Args = append(s.Args, toStrings(v)...)
			continue
		}
		s.Args = append(s.Args, subst(a))
	}
	return s, err
}

func toStrings(v any) []string {
	switch v := v.(type) {
	case []string:
		return v
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			out = append(out, fmt.Sprint(e))
		}
		return out
	case string:
		return []string{v}
	}
	return nil
}

// maxName is the longest step name: a DNS label, 63 characters.
const maxName = 63

// stepName returns base made a valid step name (a DNS label) that is not
// in taken, adding -2, -3 ... on a clash, and records it in taken.
func stepName(base string, taken map[string]bool) string {
	b := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '-'
	}, base)
	b = strings.Trim(b, "-")
	for i := 1; ; i++ {
		suffix := ""
		if i > 1 {
			suffix = fmt.Sprintf("-%d", i)
		}
		cut := b
		if len(cut)+len(suffix) > maxName {
			cut = strings.TrimRight(cut[:maxName-len(suffix)], "-")
		}
		if name := cut + suffix; !taken[name] {
			taken[name] = true
			return name
		}
	}
}
