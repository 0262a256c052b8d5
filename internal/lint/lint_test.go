package lint

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the .golden files of test/lint")

const corpus = "../../test/lint"

// lintText lints path (relative to test/lint) from there, as a user would.
func lintText(t *testing.T, o Options, paths ...string) (string, []Finding) {
	t.Helper()
	wd, _ := os.Getwd()
	if err := os.Chdir(corpus); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd) //nolint:errcheck
	fs, err := Lint(paths, o)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteText(&b, fs); err != nil {
		t.Fatal(err)
	}
	return b.String(), fs
}

// TestCorpus lints every bad and reference-form pipeline of test/lint and
// compares the findings, with their lines, with the file's .golden.
func TestCorpus(t *testing.T) {
	var cases []string
	for _, dir := range []string{"bad", "reference"} {
		m, _ := filepath.Glob(filepath.Join(corpus, dir, "*.yaml"))
		for _, f := range m {
			cases = append(cases, filepath.Join(dir, filepath.Base(f)))
		}
	}
	cases = append(cases, "pac")
	seen := map[string]bool{}
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			o := Options{}
			if c == "bad/vendored-modules.yaml" {
				o.WorkDir = "testdata/vendored"
			}
			got, fs := lintText(t, o, c)
			for _, f := range fs {
				seen[f.Rule] = true
			}
			golden := filepath.Join(corpus, strings.TrimSuffix(c, ".yaml")+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestCorpus -update)", err)
			}
			if got != string(want) {
				t.Errorf("findings of %s differ from %s\ngot:\n%s\nwant:\n%s", c, golden, got, want)
			}
			if len(fs) == 0 {
				t.Errorf("%s has no finding: a corpus file must show its rule", c)
			}
		})
	}
	for _, r := range Rules {
		if !seen[r.ID] {
			t.Errorf("rule %s has no finding in the corpus", r.ID)
		}
	}
}

// TestOwnYAMLClean: this project's StepActions, examples and good corpus
// lint clean.
func TestOwnYAMLClean(t *testing.T) {
	got, _ := lintText(t, Options{}, "../../tekton", "../../examples", "good")
	if got != "" {
		t.Errorf("findings in our own YAML:\n%s", got)
	}
}

// TestDisableComments: a comment disables a rule on its line, on the next
// line when alone, or in the whole file.
func TestDisableComments(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(corpus, "bad", "unknown-param.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(src), "- name: cachePath", "- name: cachePath # cache-lint: disable=unknown-param", 1)
	s = strings.Replace(s, "        - name: WORKING_DIRR", "        # cache-lint: disable=unknown-param\n        - name: WORKING_DIRR", 1)
	f := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err := Lint([]string{f}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 0 {
		t.Errorf("disabled findings reported: %v", fs)
	}
	if err := os.WriteFile(f, []byte("# cache-lint: disable-file=bad-reference\n"+string(src)), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, _ = Lint([]string{f}, Options{})
	if len(fs) != 2 {
		t.Errorf("disable-file of another rule changed the findings: %v", fs)
	}
	if err := os.WriteFile(f, []byte("# cache-lint: disable-file=unknown-param\n"+string(src)), 0o644); err != nil {
		t.Fatal(err)
	}
	if fs, _ = Lint([]string{f}, Options{}); len(fs) != 0 {
		t.Errorf("disable-file left %v", fs)
	}
}

// TestCatalogMatchesStepActions: the params and results lint knows for our
// StepActions are the ones tekton/*.yaml declare.
func TestCatalogMatchesStepActions(t *testing.T) {
	for file, a := range map[string]*action{"cache-fetch.yaml": oursFetch, "cache-upload.yaml": oursUpload} {
		data, err := os.ReadFile(filepath.Join("../../tekton", file))
		if err != nil {
			t.Fatal(err)
		}
		var sa struct {
			Spec struct {
				Params []struct {
					Name    string
					Default any `yaml:"default"`
				}
				Results []struct{ Name string }
			}
		}
		if err := yaml.Unmarshal(data, &sa); err != nil {
			t.Fatal(err)
		}
		var params, required, results []string
		for _, p := range sa.Spec.Params {
			params = append(params, p.Name)
			if p.Default == nil {
				required = append(required, p.Name)
			}
		}
		for _, r := range sa.Spec.Results {
			results = append(results, r.Name)
		}
		sort.Strings(required)
		req := append([]string(nil), a.required...)
		sort.Strings(req)
		if strings.Join(sortedKeys(a.params), ",") != strings.Join(sorted(params), ",") ||
			strings.Join(sortedKeys(a.results), ",") != strings.Join(sorted(results), ",") || strings.Join(req, ",") != strings.Join(required, ",") {
			t.Errorf("%s: lint knows params %v (required %v), results %v; the file declares %v (required %v), %v",
				file, sortedKeys(a.params), req, sortedKeys(a.results), sorted(params), required, sorted(results))
		}
	}
}

func sorted(s []string) []string { sort.Strings(s); return s }

// TestFormats: JSON and SARIF carry every finding with its position.
func TestFormats(t *testing.T) {
	_, fs := lintText(t, Options{}, "bad/unknown-param.yaml")
	var b bytes.Buffer
	if err := WriteJSON(&b, fs); err != nil {
		t.Fatal(err)
	}
	var back []Finding
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back) != len(fs) || back[0] != fs[0] {
		t.Fatalf("JSON round trip: %v %v", err, back)
	}
	b.Reset()
	if err := WriteSARIF(&b, fs, "test"); err != nil {
		t.Fatal(err)
	}
	var log struct {
		Version string
		Runs    []struct {
			Tool struct {
				Driver struct{ Rules []struct{ ID string } }
			}
			Results []struct {
				RuleID    string
				Level     string
				Locations []struct {
					PhysicalLocation struct {
						ArtifactLocation struct{ URI string }
						Region           struct{ StartLine, StartColumn int }
					}
				}
			}
		}
	}
	if err := json.Unmarshal(b.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	r := log.Runs[0]
	if log.Version != "2.1.0" || len(r.Tool.Driver.Rules) != len(Rules) || len(r.Results) != len(fs) {
		t.Fatalf("SARIF: %+v", log)
	}
	loc := r.Results[0].Locations[0].PhysicalLocation
	if r.Results[0].RuleID != fs[0].Rule || r.Results[0].Level != "error" || loc.ArtifactLocation.URI != fs[0].File ||
		loc.Region.StartLine != fs[0].Line || loc.Region.StartColumn != fs[0].Column {
		t.Errorf("SARIF result %+v for %+v", r.Results[0], fs[0])
	}
}

// TestDocsListEveryRule: docs/LINT.md has a section per rule.
func TestDocsListEveryRule(t *testing.T) {
	doc, err := os.ReadFile("../../docs/LINT.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range Rules {
		if !strings.Contains(string(doc), "\n### "+r.ID+"\n**"+string(r.Severity)+".**") {
			t.Errorf("docs/LINT.md has no section ### %s starting with **%s.**", r.ID, r.Severity)
		}
	}
}
