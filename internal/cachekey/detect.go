package cachekey

import (
	"os"
	"path/filepath"
)

// ecosystem is a language's lock files: if any marker exists at the root of
// the working dir, its patterns make the key.
type ecosystem struct {
	name     string
	markers  []string
	patterns []string
}

var ecosystems = []ecosystem{
	{"go", []string{"go.sum", "go.mod", "go.work"}, []string{"**/go.sum", "**/go.mod", "go.work.sum"}},
	{"npm", []string{"package-lock.json", "npm-shrinkwrap.json"}, []string{"**/package-lock.json", "**/npm-shrinkwrap.json"}},
	{"yarn", []string{"yarn.lock"}, []string{"**/yarn.lock"}},
	{"pnpm", []string{"pnpm-lock.yaml"}, []string{"**/pnpm-lock.yaml"}},
	{"bun", []string{"bun.lockb", "bun.lock"}, []string{"**/bun.lockb", "**/bun.lock"}},
	{"poetry", []string{"poetry.lock"}, []string{"**/poetry.lock"}},
	{"uv", []string{"uv.lock"}, []string{"**/uv.lock"}},
	{"pipenv", []string{"Pipfile.lock"}, []string{"**/Pipfile.lock"}},
	{"pip", []string{"requirements.txt"}, []string{"**/requirements*.txt", "**/constraints*.txt"}},
	{"maven", []string{"pom.xml"}, []string{"**/pom.xml", ".mvn/wrapper/maven-wrapper.properties"}},
	{"gradle", []string{"build.gradle", "build.gradle.kts", "settings.gradle", "settings.gradle.kts"}, []string{"**/*.gradle", "**/*.gradle.kts", "**/gradle-wrapper.properties", "**/libs.versions.toml", "**/gradle.lockfile"}},
	{"ruby", []string{"Gemfile.lock"}, []string{"**/Gemfile.lock"}},
	{"php", []string{"composer.lock"}, []string{"**/composer.lock"}},
	{"rust", []string{"Cargo.lock"}, []string{"**/Cargo.lock", "rust-toolchain", "rust-toolchain.toml"}},
}

// lockFiles lists the markers of every ecosystem, in the table's order: the
// files whose presence Detect looks for.
func lockFiles() []string {
	var out []string
	for _, e := range ecosystems {
		out = append(out, e.markers...)
	}
	return out
}

// Detect names the ecosystems whose lock files sit at the root of wd and
// returns the patterns of all of them.
func Detect(wd string) (names, patterns []string) {
	for _, e := range ecosystems {
		for _, m := range e.markers {
			if fi, err := os.Stat(filepath.Join(wd, m)); err == nil && fi.Mode().IsRegular() {
				names = append(names, e.name)
				patterns = append(patterns, e.patterns...)
				break
			}
		}
	}
	return names, patterns
}
