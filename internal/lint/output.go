package lint

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
)

// WriteText writes one line per finding.
func WriteText(w io.Writer, fs []Finding) error {
	for _, f := range fs {
		if _, err := fmt.Fprintln(w, f.String()); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON writes the findings as a JSON array.
func WriteJSON(w io.Writer, fs []Finding) error {
	if fs == nil {
		fs = []Finding{}
	}
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(fs)
}

// WriteSARIF writes the findings as a SARIF 2.1.0 log, for code-scanning
// UIs: one run, every rule described, each finding a result with its
// region and the fix in its message.
func WriteSARIF(w io.Writer, fs []Finding, version string) error {
	type msg struct {
		Text string `json:"text"`
	}
	type rule struct {
		ID               string `json:"id"`
		ShortDescription msg    `json:"shortDescription"`
		HelpURI          string `json:"helpUri"`
		Default          struct {
			Level string `json:"level"`
		} `json:"defaultConfiguration"`
	}
	type region struct {
		StartLine   int `json:"startLine"`
		StartColumn int `json:"startColumn"`
	}
	type location struct {
		Physical struct {
			Artifact struct {
				URI string `json:"uri"`
			} `json:"artifactLocation"`
			Region region `json:"region"`
		} `json:"physicalLocation"`
	}
	type result struct {
		RuleID    string     `json:"ruleId"`
		Level     string     `json:"level"`
		Message   msg        `json:"message"`
		Locations []location `json:"locations"`
	}
	var rules []rule
	for _, r := range Rules {
		x := rule{ID: r.ID, ShortDescription: msg{r.Summary}, HelpURI: "https://github.com/tekton-cache/tekton-cache/blob/main/docs/LINT.md#" + r.ID}
		x.Default.Level = string(r.Severity)
		rules = append(rules, x)
	}
	results := []result{}
	for _, f := range fs {
		var loc location
		loc.Physical.Artifact.URI = filepath.ToSlash(f.File)
		loc.Physical.Region = region{f.Line, f.Column}
		results = append(results, result{RuleID: f.Rule, Level: string(f.Severity), Message: msg{f.Message + "; fix: " + f.Fix}, Locations: []location{loc}})
	}
	log := map[string]any{
		"$schema": "https://json.schemastore.org/sarif-2.1.0.json",
		"version": "2.1.0",
		"runs": []any{map[string]any{
			"tool":    map[string]any{"driver": map[string]any{"name": "cache lint", "version": version, "informationUri": "https://github.com/tekton-cache/tekton-cache/blob/main/docs/LINT.md", "rules": rules}},
			"results": results,
		}},
	}
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(log)
}
