package bake_test

import (
	"archive/tar"
	"archive/zip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tekton-cache/tekton-cache/internal/bake"
	"github.com/tekton-cache/tekton-cache/internal/testenv"
)

// depModule writes module example.com/dep v1.0.0 (two packages) into a
// GOPROXY=file:// directory, so that the test needs no network.
func depModule(t *testing.T, proxy string) {
	t.Helper()
	dir := filepath.Join(proxy, "example.com", "dep", "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mod := "module example.com/dep\n\ngo 1.22\n"
	files := map[string]string{
		"list":        "v1.0.0\n",
		"v1.0.0.info": `{"Version":"v1.0.0","Time":"2026-01-01T00:00:00Z"}`,
		"v1.0.0.mod":  mod,
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(dir, "v1.0.0.zip"))
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for n, c := range map[string]string{
		"go.mod":     mod,
		"dep.go":     "package dep\n\nimport \"example.com/dep/words\"\n\nfunc Hello() string { return words.Join(\"hello\", \"baked\") }\n",
		"words/w.go": "package words\n\nfunc Join(a, b string) string { return a + \" \" + b }\n",
	} {
		w, err := zw.Create("example.com/dep@v1.0.0/" + n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// goEnv is the environment of a go command that sees only the given
// caches and settings.
func goEnv(tmp, gocache, gomodcache, proxy string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + tmp, "TMPDIR=" + tmp, "GOENV=off", "GOWORK=off", "GOTOOLCHAIN=local",
		"CGO_ENABLED=0", "GOSUMDB=off", "GOFLAGS=-mod=mod -modcacherw", "GOPATH=" + filepath.Join(tmp, "gopath"),
		"GOCACHE=" + gocache, "GOMODCACHE=" + gomodcache, "GOPROXY=" + proxy,
	}
	if gr := os.Getenv("GOROOT"); gr != "" {
		env = append(env, "GOROOT="+gr)
	}
	return env
}

// goRun runs go args in dir and returns its stderr (-x lists commands there).
func goRun(t *testing.T, dir string, env []string, cred *syscall.Credential, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir, cmd.Env = dir, env
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stderr.String()
}

// compiled lists the packages `go build -x` compiled (its compile lines'
// -p argument).
func compiled(x string) []string {
	var out []string
	re := regexp.MustCompile(`/compile .*-p ([^ ]+) `)
	for _, l := range strings.Split(x, "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// extract writes the tar stream of a flattened image (mutate.Extract)
// under root, as a runtime unpacks it: modes, mtimes and symlinks, owner
// 0:0 (this process's).
func extract(t *testing.T, r io.Reader, root string) {
	t.Helper()
	type dirTime struct {
		p string
		t time.Time
	}
	var dirs []dirTime
	readTar(t, r, func(h *tar.Header, tr io.Reader) {
		p := filepath.Join(root, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, root+string(filepath.Separator)) {
			t.Fatalf("%s leaves the root", h.Name)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(h.Mode) & os.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, dirTime{p, h.ModTime})
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, h.ModTime, h.ModTime); err != nil {
				t.Fatal(err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: unexpected type %c", h.Name, h.Typeflag)
		}
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chtimes(dirs[i].p, dirs[i].t, dirs[i].t); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBakedGoCacheHits is the proof that a baked cache hits: a real
// GOCACHE and GOMODCACHE, warmed by building a module with a dependency,
// are baked, pulled and extracted as a runtime would (mutate.Extract),
// and `go build -x` against the extracted copy with GOPROXY=off succeeds
// and compiles nothing: the dependency comes from the baked module cache,
// its packages from the baked build cache. Run as a user with a random
// UID in group 0 (OpenShift's way) when the test runs as root, the build
// also adds to the baked caches. The same build with the module cache at
// another path compiles the dependency, which shows that the check can
// fail.
func TestBakedGoCacheHits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module twice")
	}
	_, err := exec.LookPath("go")
	testenv.SkipUnless(t, err == nil, "no go command on PATH")
	tmp := t.TempDir()
	// The build cache hits only for the same source directory: the app is
	// at one path for the warm-up and the checks.
	app := filepath.Join(tmp, "src", "app")
	proxy := filepath.Join(tmp, "proxy")
	depModule(t, proxy)
	writeTree(t, app, map[string]string{
		"go.mod":  "module example.com/app\n\ngo 1.22\n\nrequire example.com/dep v1.0.0\n",
		"main.go": "package main\n\nimport \"example.com/dep\"\n\nfunc main() { println(dep.Hello()) }\n",
	}, 0o644)
	// The caches are warmed at the paths they have in the image (the
	// build cache's keys hold the dependency's directory in the module
	// cache): rootfs is the image's / for the warm-up, then is replaced by
	// the image's filesystem.
	rootfs := filepath.Join(tmp, "rootfs")
	gocache, gomodcache := filepath.Join(rootfs, "var/cache/go-build"), filepath.Join(rootfs, "go/pkg/mod")
	x := goRun(t, app, goEnv(tmp, gocache, gomodcache, "file://"+proxy), nil, "build", "-x", "-o", os.DevNull, "./...")
	if c := compiled(x); !contains(c, "example.com/dep") || !contains(c, "example.com/dep/words") {
		t.Fatalf("the warm-up compiled %v: the dependency's packages are missing, so the check below proves nothing", c)
	}

	reg := registries[0].start(t)
	base := pushImage(t, reg, "base/golang", amd64, types.OCIManifestSchema1)
	res, err := bake.Bake(context.Background(), bake.Options{
		Base: base,
		Layers: []bake.Layer{
			{Dir: gomodcache, Dest: "/go/pkg/mod", FixedMTime: true},
			{Dir: gocache, Dest: "/var/cache/go-build"},
		},
		Env:  []string{"GOCACHE=/var/cache/go-build", "GOMODCACHE=/go/pkg/mod"},
		Tags: []string{reg + "/ci/go:nightly"}, Insecure: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(res.Ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(rootfs, filepath.Join(tmp, "warmed")); err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	extract(t, rc, rootfs)
	rc.Close()

	// A random UID in group 0 must reach the source, the temp dir and the
	// caches, as in a pod.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: 1000680000, Gid: 0}
		for p := app; p != filepath.Dir(filepath.Dir(tmp)); p = filepath.Dir(p) {
			if err := os.Chmod(p, 0o777|os.ModeSticky); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []string{rootfs, filepath.Join(rootfs, "go"), filepath.Join(rootfs, "go/pkg"), filepath.Join(rootfs, "var"), filepath.Join(rootfs, "var/cache")} {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := goEnv(tmp, gocache, gomodcache, "off")
	x = goRun(t, app, env, cred, "build", "-x", "-o", os.DevNull, "./...")
	if c := compiled(x); len(c) != 0 {
		t.Errorf("with the baked caches, go build compiled %v: the baked build cache missed", c)
	}
	// The build adds to the baked caches: a changed package is compiled
	// and its result written into the baked GOCACHE (group-writable).
	if err := os.WriteFile(filepath.Join(app, "extra.go"), []byte("package main\n\nvar extra = 1\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	x = goRun(t, app, env, cred, "build", "-x", "-o", os.DevNull, "./...")
	if c := compiled(x); len(c) != 1 || c[0] != "main" {
		t.Errorf("after a change to the app, go build compiled %v, want main only", c)
	}
	x = goRun(t, app, env, cred, "build", "-x", "-o", os.DevNull, "./...")
	if c := compiled(x); len(c) != 0 {
		t.Errorf("the changed app built again compiled %v: its result was not written into the baked cache", c)
	}

	// The control: the same module cache at another path misses the
	// dependency's packages (its directory is in their keys), which shows
	// that the check sees a miss, and why the caches are warmed at the
	// image's paths.
	rc = mutate.Extract(img)
	elsewhere := filepath.Join(tmp, "elsewhere")
	extract(t, rc, elsewhere)
	rc.Close()
	moved := goEnv(tmp, gocache, filepath.Join(elsewhere, "go/pkg/mod"), "off")
	if c := compiled(goRun(t, app, moved, nil, "build", "-x", "-o", os.DevNull, "./...")); !contains(c, "example.com/dep") {
		t.Errorf("with the module cache moved, go build compiled %v: the check cannot tell a miss", c)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
