package archive

import (
	"fmt"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// referenceResolve is the link resolution as it was before links were
// memoized (a link reached twice was resolved twice: 2^depth times for a
// chain that goes through each link twice), kept as the oracle for the
// resolver: it must accept and refuse the same links.
func referenceResolve(dir, target string, links map[string]string, depth int) (string, bool) {
	if depth > 40 {
		return "", false // a loop: refuse
	}
	var stack []string
	if dir != "." && dir != "" {
		stack = strings.Split(dir, "/")
	}
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return "", false
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		cur := strings.Join(stack, "/")
		if t, ok := links[cur]; ok {
			if strings.HasPrefix(t, "/") {
				return "", false
			}
			r, ok := referenceResolve(path.Dir(cur), t, links, depth+1)
			if !ok {
				return "", false
			}
			stack = nil
			if r != "." && r != "" {
				stack = strings.Split(r, "/")
			}
		}
	}
	if len(stack) == 0 {
		return ".", true
	}
	return strings.Join(stack, "/"), true
}

// referenceAccepts reports whether the reference accepts the link at p.
func referenceAccepts(p string, links map[string]string) bool {
	t := links[p]
	if t == "" || strings.ContainsRune(t, 0) || strings.HasPrefix(t, "/") {
		return false
	}
	_, ok := referenceResolve(path.Dir(p), t, links, 0)
	return ok
}

// linkEntries makes the entries of a root holding the given links (path ->
// target), with every parent directory listed, sorted.
func linkEntries(links map[string]string) *Index {
	x := index()
	dirs := map[string]bool{}
	for p, t := range links {
		x.Entries = append(x.Entries, link(p, t))
		for d := path.Dir(p); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			x.Entries = append(x.Entries, dir(d))
		}
	}
	x.Sort()
	return x
}

// checkAll checks every link of x through one resolver, in the given
// order (the memo must not depend on it), and returns the refused paths.
func checkAll(x *Index, order []int) []string {
	res := newLinkResolvers(len(x.Roots), x.Entries)
	var refused []string
	for _, i := range order {
		e := &x.Entries[i]
		if e.Type == TypeSymlink && res[e.Root].check(e) != nil {
			refused = append(refused, e.Path)
		}
	}
	slices.Sort(refused)
	return refused
}

func referenceRefused(links map[string]string) []string {
	var refused []string
	for p := range links {
		if !referenceAccepts(p, links) {
			refused = append(refused, p)
		}
	}
	slices.Sort(refused)
	return refused
}

func linkPositions(x *Index) []int {
	var order []int
	for i := range x.Entries {
		if x.Entries[i].Type == TypeSymlink {
			order = append(order, i)
		}
	}
	return order
}

// TestLinkResolutionMatchesReference: on random sets of links that point
// through one another (up, down, in loops, through directories that are
// links), the memoized resolver accepts and refuses exactly what the
// reference does, whatever order the links are checked in.
func TestLinkResolutionMatchesReference(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	names := []string{"a", "b", "c", "d/a", "d/b", "d/e/a", "e", "e/a"}
	parts := []string{"..", ".", "", "a", "b", "c", "d", "e", "x"}
	runs := 3000
	if testing.Short() {
		runs = 300
	}
	for run := range runs {
		links := map[string]string{}
		for range 1 + rng.Intn(8) {
			p := names[rng.Intn(len(names))]
			if conflicts(p, links) {
				continue
			}
			var c []string
			for range 1 + rng.Intn(4) {
				c = append(c, parts[rng.Intn(len(parts))])
			}
			links[p] = strings.Join(c, "/")
		}
		x := linkEntries(links)
		order := linkPositions(x)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		got, want := checkAll(x, order), referenceRefused(links)
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d, run %d: links %v: refused %v, the reference refuses %v", seed, run, links, got, want)
		}
	}
}

// conflicts reports whether p is, or is a directory above, or lies under
// one of the links (a name cannot be both a link and a directory).
func conflicts(p string, links map[string]string) bool {
	for l := range links {
		if l == p || strings.HasPrefix(l, p+"/") || strings.HasPrefix(p, l+"/") {
			return true
		}
	}
	return false
}

// chain returns n links l00 -> l01 -> ... -> l(n-1) -> "end".
func chain(n int) map[string]string {
	links := map[string]string{}
	for i := range n {
		links[fmt.Sprintf("l%02d", i)] = fmt.Sprintf("l%02d", i+1)
	}
	links[fmt.Sprintf("l%02d", n-1)] = "end"
	return links
}

// diamond returns n links where each goes through the next one twice:
// l00 -> l01/../l01, l01 -> l02/../l02, ... (2^n resolutions without a
// memo), the last one to "end".
func diamond(n int) map[string]string {
	links := map[string]string{}
	for i := range n - 1 {
		links[fmt.Sprintf("l%02d", i)] = fmt.Sprintf("l%02d/../l%02d", i+1, i+1)
	}
	links[fmt.Sprintf("l%02d", n-1)] = "end"
	return links
}

// within fails the test when f does not return within d (a resolution that
// is exponential would run for days).
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("did not finish within %v", d)
	}
}

// orders returns the positions of x's links in index order, reversed (a
// link's result is then known before the links that lead through it reach
// it, with less depth left) and shuffled.
func orders(x *Index, rng *rand.Rand) [][]int {
	sorted := linkPositions(x)
	reversed := slices.Clone(sorted)
	slices.Reverse(reversed)
	shuffled := slices.Clone(sorted)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	return [][]int{sorted, reversed, shuffled}
}

// TestLinkChainsAndDiamonds: a chain may nest maxLinkDepth links in links,
// not one more (as before, and as the kernel's limit of 40), whatever order
// the links are checked in, and a chain that goes through each link twice
// resolves as fast as a plain one.
func TestLinkChainsAndDiamonds(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for n := 1; n <= 45; n++ {
		links := chain(n)
		x := linkEntries(links)
		want := referenceRefused(links)
		for _, order := range orders(x, rng) {
			if got := checkAll(x, order); !slices.Equal(got, want) {
				t.Fatalf("chain of %d, checked in order %v: refused %v, the reference refuses %v", n, order, got, want)
			}
		}
		err := x.Validate()
		if n <= maxLinkDepth+1 && err != nil {
			t.Fatalf("chain of %d links: %v", n, err)
		}
		if n > maxLinkDepth+1 && (err == nil || !strings.Contains(err.Error(), `"l00": link target "l01" leaves the root`)) {
			t.Fatalf("chain of %d links: got %v, want l00 refused", n, err)
		}
	}
	for n := 1; n <= 12; n++ { // the reference needs 2^n steps
		links := diamond(n)
		x := linkEntries(links)
		want := referenceRefused(links)
		for _, order := range orders(x, rng) {
			if got := checkAll(x, order); !slices.Equal(got, want) {
				t.Fatalf("diamond of %d, checked in order %v: refused %v, the reference refuses %v", n, order, got, want)
			}
		}
	}
	for _, n := range []int{maxLinkDepth + 1, maxLinkDepth + 2, 200} {
		x := linkEntries(diamond(n))
		var err error
		within(t, 20*time.Second, func() { err = x.Validate() })
		if ok := n <= maxLinkDepth+1; ok != (err == nil) {
			t.Fatalf("diamond of %d links: got %v", n, err)
		}
	}
}

// TestLinkLoopsAreRefused: a link that leads through itself, directly or
// through others, is refused, and so is every link that leads into it.
func TestLinkLoopsAreRefused(t *testing.T) {
	for _, links := range []map[string]string{
		{"a": "a"},
		{"a": "./a"},
		{"a": "b", "b": "a"},
		{"a": "b/x", "b": "a/x"},
		{"a": "b", "b": "c", "c": "a", "in": "a/y"},
		{"d/l": "../d/l/x"},
		{"a": "d/l", "d/l": "../a"},
	} {
		x := linkEntries(links)
		refused := checkAll(x, linkPositions(x))
		if want := referenceRefused(links); !slices.Equal(refused, want) || len(refused) != len(links) {
			t.Errorf("%v: refused %v, want all (the reference refuses %v)", links, refused, want)
		}
		if err := x.Validate(); err == nil || !strings.Contains(err.Error(), "leaves the root") {
			t.Errorf("%v: Validate = %v", links, err)
		}
	}
}

// pnpmIndex is an index of a pnpm-shaped node_modules with n links: a
// store of n/4 packages, each linking three others by their dependency
// edges, and one top-level link per package into the store.
func pnpmIndex(n int) *Index {
	pkgs := max(4, n/4)
	x := index(dir(".pnpm"))
	for i := range pkgs {
		store := fmt.Sprintf(".pnpm/p%d@1.0.0", i)
		nm := store + "/node_modules"
		x.Entries = append(x.Entries, dir(store), dir(nm), dir(fmt.Sprintf("%s/p%d", nm, i)),
			file(fmt.Sprintf("%s/p%d/index.js", nm, i), "x"))
		for k := 1; k <= 3; k++ {
			j := (i + k*7) % pkgs
			x.Entries = append(x.Entries, link(fmt.Sprintf("%s/p%d", nm, j), fmt.Sprintf("../../p%d@1.0.0/node_modules/p%d", j, j)))
		}
		x.Entries = append(x.Entries, link(fmt.Sprintf("p%d", i), fmt.Sprintf(".pnpm/p%d@1.0.0/node_modules/p%d", i, i)))
	}
	x.Sort()
	return x
}

// TestManyLinks: tens of thousands of links validate in well under a second
// (each used to rebuild the map of all links: 8,000 links took 25 s to
// save), and one link out among them is still found.
func TestManyLinks(t *testing.T) {
	x := pnpmIndex(40000)
	within(t, 20*time.Second, func() {
		if err := x.Validate(); err != nil {
			t.Fatal(err)
		}
	})
	// Point one dependency edge of the last package up and out.
	last := -1
	for i := range x.Entries {
		if strings.HasPrefix(x.Entries[i].Path, ".pnpm/") && x.Entries[i].Type == TypeSymlink {
			last = i
		}
	}
	x.Entries[last].Link = "../../../../outside"
	within(t, 20*time.Second, func() {
		err := x.Validate()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q: link target", x.Entries[last].Path)) {
			t.Fatalf("got %v, want %s refused", err, x.Entries[last].Path)
		}
	})
}

// TestWalkDropsLinksThatLeave: a walk leaves out a link that leads out of
// its folder, also through another link that does (whatever their order),
// keeps the others, and gives an index that validates.
func TestWalkDropsLinksThatLeave(t *testing.T) {
	d := t.TempDir()
	root := filepath.Join(d, "root")
	os.MkdirAll(filepath.Join(root, "sub"), 0o755)
	for name, target := range map[string]string{
		"abs":     "/usr",
		"up":      "../outside",
		"via-abs": "abs/bin",
		"via-up":  "sub/../up/x",
		"a-first": "via-abs",
		"ok":      "sub",
		"ok-via":  "ok/../sub",
		"sub/ok2": "../ok",
	} {
		if err := os.Symlink(target, filepath.Join(root, filepath.FromSlash(name))); err != nil {
			t.Fatal(err)
		}
	}
	x, skipped, err := Walk([]string{root})
	if err != nil {
		t.Fatal(err)
	}
	var kept, dropped []string
	for _, e := range x.Entries {
		if e.Type == TypeSymlink {
			kept = append(kept, e.Path)
		}
	}
	for _, s := range skipped {
		dropped = append(dropped, strings.TrimPrefix(s.Path, root+"/"))
	}
	slices.Sort(dropped)
	if want := []string{"ok", "ok-via", "sub/ok2"}; !slices.Equal(kept, want) {
		t.Errorf("kept links %v, want %v", kept, want)
	}
	if want := []string{"a-first", "abs", "up", "via-abs", "via-up"}; !slices.Equal(dropped, want) {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
	if err := x.Validate(); err != nil {
		t.Errorf("the walked index does not validate: %v", err)
	}
}

// BenchmarkValidateLinks validates pnpm-shaped indexes of 1k to 64k links:
// the time per link stays flat.
func BenchmarkValidateLinks(b *testing.B) {
	for _, n := range []int{1000, 4000, 16000, 64000} {
		x := pnpmIndex(n)
		links := len(linkPositions(x))
		b.Run(fmt.Sprintf("links=%dk", n/1000), func(b *testing.B) {
			for b.Loop() {
				if err := x.Validate(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(links), "ns/link")
		})
	}
}
