package main

// The maven and scale corpora.

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// mavenPackages are Debian's java libraries whose poms and jars, in the
// Maven layout under /usr/share/maven-repo, make the maven corpus: a
// Spring/Jackson/Netty/Jetty application with its test and build plugins.
var mavenPackages = []string{
	"libmaven3-core-java", "libguava-java",
	"libspring-core-java", "libspring-beans-java", "libspring-context-java", "libspring-web-java",
	"libspring-transaction-java", "libspring-jdbc-java",
	"libjackson2-databind-java", "libjackson2-dataformat-yaml", "libjackson2-dataformat-xml-java",
	"libnetty-java", "libjetty9-java", "libtomcat9-java", "libslf4j-java", "liblog4j2-java",
	"libcommons-lang3-java", "libcommons-collections4-java", "libcommons-compress-java", "libcommons-math3-java",
	"libhttpclient-java", "libasm-java", "libbyte-buddy-java", "libmockito-java", "junit4", "junit5",
	"libguice-java", "libapache-poi-java", "libbatik-java", "libxerces2-java", "libbcprov-java", "libbcpkix-java",
	"libeclipse-jdt-core-java", "libmaven-shade-plugin-java", "libmaven-compiler-plugin-java",
	"libmaven-resources-plugin-java", "libmaven-jar-plugin-java", "libsurefire-java",
	"libmaven-install-plugin-java", "libplexus-compiler-java", "libhibernate-validator-java", "libjaxb-api-java",
	"libgoogle-gson-java", "libprotobuf-java", "libjoda-time-java", "libosgi-core-java", "libmaven-archiver-java",
	"libmaven-invoker-java", "libmaven-dependency-plugin-java", "libjna-java", "libfelix-framework-java",
	"libxmlgraphics-commons-java", "libfop-java", "libjsoup-java",
}

// mavenRepo is where Debian's java packages put their poms and jars.
const mavenRepo = "/usr/share/maven-repo"

// mavenTime is the time written into the generated _remote.repositories
// and maven-metadata files, so that the corpus is the same on every build.
var mavenTime = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// mavenCorpus returns root/m2/repository: a copy of /usr/share/maven-repo
// (symlinks dereferenced) plus, as Maven writes them into ~/.m2, a .sha1
// beside every pom and jar, a _remote.repositories in every version
// directory and a maven-metadata-central.xml in every artifact directory.
// The packages are installed with apt-get first when missing (only make
// bench runs this). It is rebuilt when the installed versions change.
func mavenCorpus(root string) []string {
	repo := filepath.Join(root, "m2", "repository")
	missing := slices.DeleteFunc(slices.Clone(mavenPackages), func(p string) bool {
		return exec.Command("dpkg", "-s", p).Run() == nil
	})
	if len(missing) > 0 {
		if _, err := exec.LookPath("apt-get"); err != nil {
			log.Fatalf("the maven corpus needs Debian's packages %s (no apt-get here)", strings.Join(missing, " "))
		}
		log.Printf("installing %d java packages for the maven corpus (apt-get) ...", len(missing))
		cmd := exec.Command("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		check(cmd.Run())
	}
	q := exec.Command("dpkg-query", append([]string{"-W", "-f", "${Package} ${Version}\n"}, mavenPackages...)...)
	versions, err := q.Output()
	check(err)
	stamp := fmt.Sprintf("%x\n", sha1.Sum(versions))
	if done, err := os.ReadFile(filepath.Join(root, ".done")); err == nil && string(done) == stamp {
		return []string{repo}
	}
	log.Printf("building the maven corpus (a copy of %s, with what Maven adds to ~/.m2) ...", mavenRepo)
	start := time.Now()
	os.RemoveAll(root)
	check(os.MkdirAll(filepath.Dir(repo), 0o755))
	check(exec.Command("cp", "-rL", mavenRepo, repo).Run())
	check(addMavenFiles(repo))
	check(os.WriteFile(filepath.Join(root, ".done"), []byte(stamp), 0o644))
	log.Printf("maven corpus built in %.0f s", time.Since(start).Seconds())
	return []string{repo}
}

// addMavenFiles writes under repo what a real ~/.m2/repository holds beside
// the downloaded poms and jars.
func addMavenFiles(repo string) error {
	versions := map[string][]string{} // artifact dir -> its version dirs
	err := filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !strings.HasSuffix(p, ".pom") && !strings.HasSuffix(p, ".jar") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha1.Sum(data)
		if err := os.WriteFile(p+".sha1", []byte(hex.EncodeToString(sum[:])), 0o644); err != nil {
			return err
		}
		vdir := filepath.Dir(p)
		adir := filepath.Dir(vdir)
		if !slices.Contains(versions[adir], vdir) {
			versions[adir] = append(versions[adir], vdir)
		}
		return nil
	})
	if err != nil {
		return err
	}
	stamp := mavenTime.Format("Mon Jan 02 15:04:05 MST 2006")
	for adir, vdirs := range versions {
		sort.Strings(vdirs) // lexical order: "latest" is the last of it

		var vs []string
		for _, vdir := range vdirs {
			var b bytes.Buffer
			fmt.Fprintf(&b, "#NOTE: This is a Maven Resolver internal implementation file, its format can be changed without prior notice.\n#%s\n", stamp)
			names, err := filepath.Glob(filepath.Join(vdir, "*"))
			if err != nil {
				return err
			}
			for _, n := range names {
				if strings.HasSuffix(n, ".pom") || strings.HasSuffix(n, ".jar") {
					fmt.Fprintf(&b, "%s>central=\n", filepath.Base(n))
				}
			}
			if err := os.WriteFile(filepath.Join(vdir, "_remote.repositories"), b.Bytes(), 0o644); err != nil {
				return err
			}
			vs = append(vs, filepath.Base(vdir))
		}
		rel, err := filepath.Rel(repo, filepath.Dir(adir))
		if err != nil {
			return err
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata>\n  <groupId>%s</groupId>\n  <artifactId>%s</artifactId>\n  <versioning>\n",
			strings.ReplaceAll(rel, string(filepath.Separator), "."), filepath.Base(adir))
		fmt.Fprintf(&b, "    <latest>%s</latest>\n    <release>%s</release>\n    <versions>\n", vs[len(vs)-1], vs[len(vs)-1])
		for _, v := range vs {
			fmt.Fprintf(&b, "      <version>%s</version>\n", v)
		}
		fmt.Fprintf(&b, "    </versions>\n    <lastUpdated>%s</lastUpdated>\n  </versioning>\n</metadata>\n", mavenTime.Format("20060102150405"))
		if err := os.WriteFile(filepath.Join(adir, "maven-metadata-central.xml"), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// The scale corpus' size: at least this many bytes and regular files.
const (
	scaleBytes = 10_000_000_000
	scaleFiles = 500_000
)

// scaleCorpus returns root/tree: copies of the go corpus (mid-size files)
// and of the node corpus (small files), as few as give scaleBytes and
// scaleFiles. Each copy is a real one (a reflink where the file system
// has them, never a hard link) with the last byte of every non-empty file
// of copy i XORed with i, so that no two copies share a file or a pack
// digest. Modes and mtimes are kept.
func scaleCorpus(root string) []string {
	tree := filepath.Join(root, "tree")
	gofolders, nodefolders := corpus("go"), corpus("node")
	// A corpus may be a symlink to another -dir's (the walk would not
	// enter it).
	goParent, err := filepath.EvalSymlinks(parentOf(gofolders))
	check(err)
	nodeParent, err := filepath.EvalSymlinks(parentOf(nodefolders))
	check(err)
	gb, gf := treeSize(goParent)
	nb, nf := treeSize(nodeParent)
	if gb == 0 || gf == 0 || nb == 0 || nf == 0 {
		log.Fatalf("the scale corpus is made of the go and node corpora: %s holds %d bytes in %d files, %s %d in %d", goParent, gb, gf, nodeParent, nb, nf)
	}
	nGo, nNode := scaleCopies(gb, gf, nb, nf)
	stamp := fmt.Sprintf("go %d x %d bytes %d files, node %d x %d bytes %d files\n", nGo, gb, gf, nNode, nb, nf)
	if done, err := os.ReadFile(filepath.Join(root, ".done")); err == nil && string(done) == stamp {
		return []string{tree}
	}
	need := nGo*gb + nNode*nb
	log.Printf("building the scale corpus: %s", strings.TrimSpace(stamp))
	start := time.Now()
	os.RemoveAll(root)
	check(os.MkdirAll(tree, 0o755))
	var st unix.Statfs_t
	check(unix.Statfs(tree, &st))
	if free := int64(st.Bavail) * st.Bsize; free < need*4 {
		log.Fatalf("the scale corpus and its runs need about %d GB free under %s, %d GB are", need*4/1e9, root, free/1e9)
	}
	type job struct{ src, dst string }
	var jobs []job
	for i := range nGo {
		jobs = append(jobs, job{goParent, filepath.Join(tree, fmt.Sprintf("go-%d", i))})
	}
	for i := range nNode {
		jobs = append(jobs, job{nodeParent, filepath.Join(tree, fmt.Sprintf("node-%d", i))})
	}
	// Two copies at a time: one reads while the other writes.
	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, 2)
	for i, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = copyVaried(j.src, j.dst, byte(i))
		}()
	}
	wg.Wait()
	check(errors.Join(errs...))
	check(os.WriteFile(filepath.Join(root, ".done"), []byte(stamp), 0o644))
	b, f := treeSize(tree)
	log.Printf("scale corpus built in %.0f s: %.2f GB, %d files", time.Since(start).Seconds(), float64(b)/1e9, f)
	settle()
	return []string{tree}
}

// scaleCopies returns how many copies of a go corpus of gb bytes and gf
// files and of a node corpus of nb bytes and nf files reach scaleBytes and
// scaleFiles with the least excess over both. All four must be positive.
func scaleCopies(gb, gf, nb, nf int64) (nGo, nNode int64) {
	best := -1.0
	for n := int64(0); n*nf < 2*scaleFiles+nf; n++ {
		g := max(0, ceilDiv(scaleBytes-n*nb, gb), ceilDiv(scaleFiles-n*nf, gf))
		// Over both targets by the least: at 10 GB, as many small
		// files as would reach 10 GB with the fewest bytes are 40% more
		// than 500,000.
		over := float64(g*gb+n*nb)/scaleBytes + float64(g*gf+n*nf)/scaleFiles
		if best < 0 || over < best {
			best, nGo, nNode = over, g, n
		}
	}
	return nGo, nNode
}

// ceilDiv returns a/b rounded up, for b > 0.
func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

// treeSize returns the bytes and the number of regular files under dir,
// the restore state left out.
func treeSize(dir string) (bytes, files int64) {
	check(filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || d.Name() == ".tekton-cache-state" {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		bytes += fi.Size()
		files++
		return nil
	}))
	return bytes, files
}

// copyVaried copies the tree src to dst (directories, regular files and
// symlinks, with their modes and mtimes; the restore state left out) and
// XORs the last byte of every non-empty file with vary.
func copyVaried(src, dst string, vary byte) error {
	var dirs []string // directories, to set their mtimes once filled
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.Name() == ".tekton-cache-state" {
			return nil
		}
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, rel)
			return os.MkdirAll(to, fi.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.Type().IsRegular():
			return copyFile(p, to, fi, vary)
		}
		return fmt.Errorf("%s: not a file, directory or symlink", p)
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		fi, err := os.Stat(filepath.Join(src, dirs[i]))
		if err != nil {
			return err
		}
		to := filepath.Join(dst, dirs[i])
		if err := os.Chmod(to, fi.Mode().Perm()); err != nil {
			return err
		}
		if err := os.Chtimes(to, fi.ModTime(), fi.ModTime()); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies p (of info fi) to a new file to, as a reflink when the
// file system can, then XORs its last byte with vary and sets its mtime.
func copyFile(p, to string, fi fs.FileInfo, vary byte) error {
	in, err := os.Open(p)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) != nil {
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
	}
	if vary != 0 && fi.Size() > 0 {
		if err := xorLastByte(in, out, fi.Size(), vary); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chtimes(to, fi.ModTime(), fi.ModTime())
}

// xorLastByte writes to w the last byte of r (of size bytes, not 0) XORed
// with x.
func xorLastByte(r io.ReaderAt, w io.WriterAt, size int64, x byte) error {
	b := make([]byte, 1)
	if _, err := r.ReadAt(b, size-1); err != nil {
		return err
	}
	b[0] ^= x
	_, err := w.WriteAt(b, size-1)
	return err
}
