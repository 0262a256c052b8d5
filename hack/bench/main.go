// Command bench measures save and restore against the floors of the same
// machine: `tar | zstd -T0 -3` and `zstd -d | tar -x` on the same data, and
// the reference tool's approach (one gzip tar through a temp file, pushed
// whole). It reports wall time, CPU time, peak RSS and bytes written to the
// store, as ratios to the floors. Run it with `make bench`.
//
// Corpora (kept between runs under -dir):
//   - go: GOCACHE and GOMODCACHE produced by building this repository and
//     compiling its tests into empty dirs (over 1 GB, tens of thousands of
//     files);
//   - large: few large files (16 x 256 MiB, half random, half text);
//   - node: node_modules of a real `npm ci` of hack/bench/node (tens of
//     thousands of small files);
//   - node-pinned: the same tree with every mtime pinned to one value, as
//     reproducible-build tooling leaves it (its incremental scenario also
//     changes files keeping their size and mtime);
//   - pnpm: node_modules of a real `pnpm install` (pnpm 9, copy import) of
//     the same lock file: the packages under .pnpm/ and thousands of
//     symlinks, one per dependency edge;
//   - maven: a ~/.m2/repository of Debian's java packages (real poms and
//     jars, thousands of small files), with the .sha1, _remote.repositories
//     and maven-metadata files Maven adds;
//   - scale: 10 GB and 500,000 files, copies of the go and node corpora
//     with one byte varied per copy;
//   - many: about 600,000 entries of tiny files (0-2 KiB, 70-character
//     paths), for peak RSS at scale without 10 GB.
//
// Then the load test of cache-serve (serveload.go): -serve-clients cache
// processes at once saving and restoring a Go cache of -serve-mb MB each
// through one cache-serve, and the same on file:// directly.
//
// Only this command installs packages (from the npm registry, with the
// lock file's versions and no install scripts; Debian's java packages with
// apt-get); make test and CI never run it.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	dir     = flag.String("dir", ".bench", "where corpora, stores and work dirs live")
	bin     = flag.String("cache", "bin/cache", "the cache binary")
	corpora = flag.String("corpora", "go,large,node,node-pinned,pnpm,maven", "corpora to run: go, large, node, node-pinned, pnpm, maven, scale, many")
	stores  = flag.String("stores", "file,oci", "stores to run: file, oci")
	out     = flag.String("out", "", "also write the markdown report to this file")
	reps    = flag.Int("reps", 3, "runs of each cold scenario and floor; the median is reported")
)

type result struct {
	wall, cpu time.Duration
	rssKB     int64
	stored    int64 // bytes sent to (save) or fetched from (restore) the store
	hashed    int64 // files the cache had to read and hash; -1: not a cache run
	note      string
	stdout    string
}

type row struct {
	corpus, store, scenario string
	r, floor                result
	floorName               string
}

var rows []row

func main() {
	flag.Parse()
	log.SetFlags(0)
	abs, err := filepath.Abs(*dir)
	check(err)
	*dir = abs
	*bin, err = filepath.Abs(*bin)
	check(err)
	checkServeBin()
	for _, c := range strings.Split(*corpora, ",") {
		if c == "" {
			continue
		}
		folders := corpus(c)
		for _, s := range strings.Split(*stores, ",") {
			if s != "" {
				runStore(c, folders, s)
			}
		}
		runNet(c, folders)
	}
	closeNet()
	runServeLoad()
	report()
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// corpus returns the folders of corpus name, building them if missing.
func corpus(name string) []string {
	root := filepath.Join(*dir, "corpus", name)
	switch name {
	case "go":
		gc, gm := filepath.Join(root, "gocache"), filepath.Join(root, "gomodcache")
		if _, err := os.Stat(filepath.Join(root, ".done")); err != nil {
			log.Printf("building the go corpus (GOCACHE and GOMODCACHE of this repository's build and tests) ...")
			os.RemoveAll(root)
			// Build the committed tree (not work in progress) into empty caches.
			src := filepath.Join(root, "src")
			check(os.MkdirAll(src, 0o755))
			check(exec.Command("bash", "-c", "git archive HEAD | tar -x -C "+q(src)).Run())
			env := append(os.Environ(), "GOCACHE="+gc, "GOMODCACHE="+gm, "GOFLAGS=-modcacherw")
			for _, args := range [][]string{{"build", "./..."}, {"test", "-count=1", "-run", "^$", "./..."}, {"vet", "./..."}} {
				cmd := exec.Command("go", args...)
				cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = src, env, os.Stderr, os.Stderr
				check(cmd.Run())
			}
			check(os.RemoveAll(src))
			check(os.WriteFile(filepath.Join(root, ".done"), nil, 0o644))
		}
		return []string{gc, gm}
	case "large":
		d := filepath.Join(root, "data")
		if _, err := os.Stat(filepath.Join(root, ".done")); err != nil {
			log.Printf("building the large corpus (16 x 256 MiB) ...")
			os.RemoveAll(root)
			check(os.MkdirAll(d, 0o755))
			text := textChunk()
			for i := range 16 {
				f, err := os.Create(filepath.Join(d, fmt.Sprintf("blob-%02d.bin", i)))
				check(err)
				for j := 0; j < 128; j++ { // 128 x 2 MiB
					if j%2 == 0 {
						_, err = io.CopyN(f, rand.Reader, 1<<20)
						check(err)
						_, err = f.Write(text[:1<<20])
					} else {
						_, err = f.Write(text[:2<<20])
					}
					check(err)
				}
				check(f.Close())
			}
			check(os.WriteFile(filepath.Join(root, ".done"), nil, 0o644))
		}
		return []string{d}
	case "node", "pnpm":
		return nodeCorpus(root, name == "pnpm")
	case "node-pinned":
		nm := filepath.Join(root, "node_modules")
		src := corpus("node")[0]
		if done, err := os.ReadFile(filepath.Join(root, ".done")); err != nil || string(done) != lockStamp() {
			log.Printf("building the node-pinned corpus (the node corpus, every mtime set to %s) ...", pinned.UTC().Format(time.RFC3339))
			start := time.Now()
			os.RemoveAll(root)
			check(os.MkdirAll(root, 0o755))
			check(exec.Command("cp", "-a", src, nm).Run())
			check(pin(nm))
			check(os.WriteFile(filepath.Join(root, ".done"), []byte(lockStamp()), 0o644))
			log.Printf("node-pinned corpus built in %.0f s", time.Since(start).Seconds())
			settle()
		}
		return []string{nm}
	case "maven":
		return mavenCorpus(root)
	case "scale":
		return scaleCorpus(root)
	case "many":
		return manyCorpus(root)
	}
	log.Fatalf("unknown corpus %q", name)
	return nil
}

// nodeLock is the directory holding the node corpus' package.json and
// package-lock.json.
const nodeLock = "hack/bench/node"

// pnpmVersion installs the pnpm corpus.
const pnpmVersion = "pnpm@9.15.9"

// lockStamp names the lock file's content: a node corpus built from
// another one is rebuilt.
func lockStamp() string {
	lock, err := os.ReadFile(filepath.Join(nodeLock, "package-lock.json"))
	check(err)
	return fmt.Sprintf("%x\n", sha256.Sum256(lock))
}

// nodeCorpus returns node_modules of hack/bench/node installed by npm ci,
// or by pnpm install from the same lock file, rebuilt when the lock file
// changed. Downloads are kept in the npm (or pnpm) cache under -dir.
func nodeCorpus(root string, pnpm bool) []string {
	stamp := lockStamp()
	nm := filepath.Join(root, "node_modules")
	if done, err := os.ReadFile(filepath.Join(root, ".done")); err == nil && string(done) == stamp {
		return []string{nm}
	}
	tool := "npm ci"
	if pnpm {
		tool = pnpmVersion + " install (copy import)"
	}
	log.Printf("building the %s corpus (%s of %s, from the npm registry) ...", filepath.Base(root), tool, nodeLock)
	start := time.Now()
	os.RemoveAll(root)
	check(os.MkdirAll(root, 0o755))
	for _, f := range []string{"package.json", "package-lock.json"} {
		data, err := os.ReadFile(filepath.Join(nodeLock, f))
		check(err)
		check(os.WriteFile(filepath.Join(root, f), data, 0o644))
	}
	npmCache := filepath.Join(*dir, "npm-cache")
	run := func(args ...string) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		// No update check, funding or audit requests (and, by the flags
		// below, no dependency's install script).
		cmd.Env = append(os.Environ(), "npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false")
		check(cmd.Run())
	}
	if !pnpm {
		run("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--cache", npmCache)
	} else {
		// Its content store and metadata cache under -dir, for both commands.
		check(os.WriteFile(filepath.Join(root, ".npmrc"), []byte("store-dir="+filepath.Join(*dir, "pnpm-store")+
			"\ncache-dir="+filepath.Join(*dir, "pnpm-cache")+"\npackage-import-method=copy\n"), 0o644))
		pn := []string{"npm", "exec", "--yes", "--cache", npmCache, "--package", pnpmVersion, "--", "pnpm"}
		// pnpm import writes pnpm-lock.yaml from package-lock.json's versions.
		run(append(pn, "import")...)
		run(append(pn, "install", "--frozen-lockfile", "--ignore-scripts")...)
	}
	check(os.WriteFile(filepath.Join(root, ".done"), []byte(stamp), 0o644))
	log.Printf("%s corpus built in %.0f s", filepath.Base(root), time.Since(start).Seconds())
	// npm and pnpm delete many temp files: without a pause, the first
	// restores after a build ran 3-8 times slower than later ones (the
	// floor and the cache alike), as after a run's cleanup.
	settle()
	return []string{nm}
}

// pinned is the mtime of every file of the node-pinned corpus: the one npm
// pack writes into every tarball entry.
var pinned = time.Date(1985, 10, 26, 8, 15, 0, 0, time.UTC)

// pin sets the mtime (and atime) of everything under dir, dir included, to
// pinned, without following symlinks.
func pin(dir string) error {
	ts := []unix.Timespec{unix.NsecToTimespec(pinned.UnixNano()), unix.NsecToTimespec(pinned.UnixNano())}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// textChunk returns 2 MiB of real source text (compresses like code does).
func textChunk() []byte {
	var b bytes.Buffer
	filepath.WalkDir(filepath.Join(runtime.GOROOT(), "src", "net"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && b.Len() < 2<<20 {
			data, _ := os.ReadFile(p)
			b.Write(data)
		}
		return nil
	})
	for b.Len() < 2<<20 {
		b.Write(b.Bytes())
	}
	return b.Bytes()[:2<<20]
}

// measure runs a shell command and returns its wall time, CPU time (its
// own and its children's) and peak RSS.
func measure(name, script string, env ...string) result {
	cmd := exec.Command("bash", "-c", "set -euo pipefail; "+script)
	cmd.Env = append(os.Environ(), env...)
	var outb, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &errb
	// Write back what earlier runs left dirty, so that no run pays for
	// the one before it.
	check(exec.Command("sync").Run())
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		log.Fatalf("%s: %v\n%s", name, err, errb.String())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	log.Printf("  %-40s %6.2fs wall %6.2fs cpu %5d MiB rss", name, wall.Seconds(), cpu.Seconds(), ru.Maxrss/1024)
	return result{wall: wall, cpu: cpu, rssKB: ru.Maxrss, hashed: -1, note: lastLine(errb.String()), stdout: outb.String()}
}

// median runs f -reps times and returns the run with the median wall time.
func median(rs []result) result {
	rs = slices.Clone(rs)
	sort.Slice(rs, func(a, b int) bool { return rs[a].wall < rs[b].wall })
	return rs[len(rs)/2]
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func duBytes(p string) int64 {
	var n int64
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func folderFlags(folders []string) string {
	var b strings.Builder
	for _, f := range folders {
		b.WriteString(" --folder " + q(f))
	}
	return b.String()
}

// under maps the corpus folders into a work dir, keeping their names.
func under(ws string, folders []string) []string {
	out := make([]string, len(folders))
	for i, f := range folders {
		out[i] = filepath.Join(ws, filepath.Base(f))
	}
	return out
}

func runStore(corpusName string, folders []string, storeKind string) {
	log.Printf("%s corpus, %s store", corpusName, storeKind)
	work := filepath.Join(*dir, "run", corpusName+"-"+storeKind)
	check(os.RemoveAll(work))
	check(os.MkdirAll(work, 0o755))
	defer func() {
		os.RemoveAll(work)
		settle()
	}()

	var storeURL, storeDir, refURL string
	switch storeKind {
	case "file":
		storeDir = filepath.Join(work, "store")
		storeURL = "file://" + storeDir
	case "oci":
		storeDir = filepath.Join(work, "registry")
		addr, stop := startRegistry(storeDir, "")
		defer stop()
		storeURL = "oci://" + addr + "/bench/cache"
		refURL = addr + "/bench/reference"
	default:
		log.Fatalf("unknown store %q", storeKind)
	}
	parent := filepath.Dir(folders[0])
	names := ""
	for _, f := range folders {
		names += " " + q(filepath.Base(f))
	}
	add := func(scenario string, r, floor result, floorName string) {
		rows = append(rows, row{corpusName, storeKind, scenario, r, floor, floorName})
	}

	// cache runs the cache binary; what it sent, and how many files it
	// hashed (0 when the build does not say), come from its JSON outcome.
	cache := func(name, args string) result {
		r := measure(name, q(*bin)+" "+args+" --output json")
		var out struct {
			Sent       int64 `json:"uploaded-bytes"`
			Downloaded int64 `json:"downloaded"`
			Hashed     int64 `json:"hashed-files"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err == nil {
			r.stored, r.hashed = out.Sent+out.Downloaded, out.Hashed
		}
		return r
	}

	// The cold scenarios and their floors, measured on the same data in the
	// same run: rep i runs floor save and cold save, then floor restore and
	// cold restore, the floor first in even reps and last in odd ones, so
	// that a machine getting slower (or faster) during the run weighs on
	// both. Each reports the median of -reps.
	tarZst := filepath.Join(work, "floor.tar.zst")
	floorSave := func(i int) result {
		r := measure("tar | zstd -T0 -3", fmt.Sprintf("tar -C %s -cf - %s | zstd -q -f -T0 -3 -o %s", q(parent), names, q(tarZst)))
		r.stored = duBytes(tarZst)
		return r
	}
	floorRestore := func(i int) result {
		dst := filepath.Join(work, fmt.Sprintf("floor-restore-%d", i))
		check(os.MkdirAll(dst, 0o755))
		return measure("zstd -d | tar -x", fmt.Sprintf("zstd -q -d -c %s | tar -C %s -xf -", q(tarZst), q(dst)))
	}
	// 1. cold save, into a new store (OCI: a new repository) each time;
	// the first one is used from then on.
	coldSave := func(i int) result {
		// A save leaves its state in the folders; a cold save has none.
		for _, f := range folders {
			os.Remove(filepath.Join(f, ".tekton-cache-state"))
		}
		u := storeURL
		if i > 0 {
			u = fmt.Sprintf("%s%d", strings.Replace(storeURL, "/store", "/store-", 1), i)
			if storeKind == "oci" {
				u = fmt.Sprintf("%s%d", storeURL, i)
			}
		}
		return cache("cache save (cold)", fmt.Sprintf("save --store %s --key k1 %s", q(u), folderFlags(folders)))
	}
	// 2. cold restore into an empty dir; the first one is used from then on.
	ws := filepath.Join(work, "ws")
	wsFolders := under(ws, folders)
	coldRestore := func(i int) result {
		f := wsFolders
		if i > 0 {
			f = under(fmt.Sprintf("%s-%d", ws, i), folders)
		}
		return cache("cache restore (cold)", fmt.Sprintf("restore --store %s --key k1 %s", q(storeURL), folderFlags(f)))
	}
	var fsR, csR, frR, crR []result
	pair := func(i int, a, b func(int) result, ra, rb *[]result) {
		if i%2 == 0 {
			*ra = append(*ra, a(i))
			*rb = append(*rb, b(i))
		} else {
			*rb = append(*rb, b(i))
			*ra = append(*ra, a(i))
		}
	}
	// The scale corpus runs once (each cold restore and its floor keep a
	// 10 GB tree), and its floor's archive and tree are removed once
	// measured, to stay within the disk it was sized for.
	big := corpusName == "scale"
	n := *reps
	if big {
		n = 1
	}
	for i := range n {
		pair(i, floorSave, coldSave, &fsR, &csR)
		pair(i, floorRestore, coldRestore, &frR, &crR)
	}
	if big {
		check(os.Remove(tarZst))
		check(os.RemoveAll(filepath.Join(work, "floor-restore-0")))
		settle()
	}
	cold, coldR, floorS, floorR := median(csR), median(crR), median(fsR), median(frR)
	add("cold save", cold, floorS, "tar|zstd")
	add("cold restore", coldR, floorR, "zstd|tar")
	// 3. no-op save
	noop := cache("cache save (no-op)", fmt.Sprintf("save --store %s --key k2 %s", q(storeURL), folderFlags(wsFolders)))
	add("no-op save", noop, cold, "cold save")
	// 4. incremental save: ~5% new files, a few touched.
	corpusBytes := duBytes(parentOf(folders))
	// In the pinned corpus the new files have the pinned mtime too, and the
	// touched ones keep their size and mtime: only their content says.
	isPinned := corpusName == "node-pinned"
	newBytes := addFiles(wsFolders[len(wsFolders)-1], corpusBytes/20)
	if isPinned {
		check(pin(filepath.Join(wsFolders[len(wsFolders)-1], "newdep")))
	}
	touched := touchSome(wsFolders[0], corpusBytes/500, isPinned)
	newZst := filepath.Join(work, "new.tar.zst")
	// The list goes through a file: a thousand paths (the scale corpus)
	// are past the kernel's limit on one argument of bash -c.
	changed := filepath.Join(work, "changed.list")
	check(os.WriteFile(changed, []byte(strings.Join(append([]string{filepath.Join(wsFolders[len(wsFolders)-1], "newdep")}, touched...), "\n")+"\n"), 0o644))
	measure("(size of the new and touched files, zstd -3)", fmt.Sprintf("tar -cPf - --verbatim-files-from -T %s | zstd -q -T0 -3 -o %s", q(changed), q(newZst)))
	inc := cache("cache save (incremental)", fmt.Sprintf("save --store %s --key k3 %s", q(storeURL), folderFlags(wsFolders)))
	how := "touched ones"
	if isPinned {
		how = "changed in place (same size, same mtime)"
	}
	inc.note = fmt.Sprintf("new files %s and %d %s (compressed %s); sent %s = %.2fx", mib(newBytes), len(touched), how, mib(duBytes(newZst)), mib(inc.stored), float64(inc.stored)/float64(duBytes(newZst)))
	add("incremental save", inc, cold, "cold save")
	// 5. warm restore: a dir holding the previous entry receives k3.
	ws2 := filepath.Join(work, "ws2")
	ws2Folders := under(ws2, folders)
	cache("cache restore (previous entry)", fmt.Sprintf("restore --store %s --key k1 %s", q(storeURL), folderFlags(ws2Folders)))
	warm := cache("cache restore (warm, ~5% differs)", fmt.Sprintf("restore --store %s --key k3 %s", q(storeURL), folderFlags(ws2Folders)))
	// What was saved as k3 (ws) and what the warm restore of k3 gave (ws2)
	// must be the same tree: a stale save or a stale warm restore shows here.
	warm.note = "warm restore gives the saved tree"
	for i := range wsFolders {
		if d := diffTrees(wsFolders[i], ws2Folders[i]); d != "" {
			warm.note = "WRONG: the warm restore differs from the saved tree: " + d
			log.Printf("  %s", warm.note)
			break
		}
	}
	add("warm restore", warm, coldR, "cold restore")
	if big || corpusName == "many" {
		// The reference tool's single-threaded gzip of 10 GB: left out;
		// the many corpus is for peak RSS, which it does not show.
		return
	}
	// 6. the reference tool's approach: gzip tar through a temp file, pushed whole.
	tgz := filepath.Join(work, "ref.tgz")
	var refSave, refRestore result
	refDst := filepath.Join(work, "ref-restore")
	check(os.MkdirAll(refDst, 0o755))
	switch storeKind {
	case "file":
		refSave = measure("reference: tar -czf tmp && cp", fmt.Sprintf("tar -C %s -czf %s %s && mkdir -p %s/ref && cp %s %s/ref/", q(parent), q(tgz), names, q(storeDir), q(tgz), q(storeDir)))
		refRestore = measure("reference: cp && tar -xzf", fmt.Sprintf("cp %s/ref/ref.tgz %s/x.tgz && tar -C %s -xzf %s/x.tgz", q(storeDir), q(work), q(refDst), q(work)))
	case "oci":
		refSave = measure("reference: tar -czf tmp && crane append", fmt.Sprintf("tar -C %s -czf %s %s && crane append -f %s -t %s:k1", q(parent), q(tgz), names, q(tgz), refURL))
		refRestore = measure("reference: crane export | tar -x", fmt.Sprintf("crane export %s:k1 - | tar -C %s -xf -", refURL, q(refDst)))
	}
	refSave.stored = duBytes(tgz)
	add("reference tool save", refSave, floorS, "tar|zstd")
	add("reference tool restore", refRestore, floorR, "zstd|tar")
}

// settle waits after many files were deleted. On ext4 without a journal
// (this machine's root), allocating an inode skips, one by one, every free
// inode whose deletion time is less than 60 s old, or 360 s while its
// inode table block is dirty (fs/ext4/ialloc.c, recently_deleted): a
// restore just after a tree of 40,000 files was removed spent 20 s of
// system time there instead of about 2 (perf). So the deletions are written out
// (sync) and then left to age past the 60 s.
func settle() {
	exec.Command("sync").Run() //nolint:errcheck // best effort: the wait is what matters
	time.Sleep(65 * time.Second)
}

func parentOf(folders []string) string { return filepath.Dir(folders[0]) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// addFiles writes about n bytes of new files (half source text, half random)
// under dir/newdep, as a dependency added by a lock-file change.
func addFiles(dir string, n int64) int64 {
	d := filepath.Join(dir, "newdep")
	check(os.MkdirAll(d, 0o755))
	text := textChunk()
	var written int64
	for i := 0; written < n; i++ {
		size := int64(4<<10 + (i*7919)%(256<<10))
		buf := make([]byte, size)
		copy(buf, text[(i*4099)%(1<<20):])
		rand.Read(buf[:size/4])
		check(os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d", i)), buf, 0o644))
		written += size
	}
	return written
}

// touchSome appends a byte to one file in 500 of dir, as a lock-file change
// does to a few small files: only files of at most 1/500 of the corpus
// (limit bytes) are touched, never the new ones, so that "about 5% differs"
// holds. The large corpus has no such file: nothing is touched there. With
// inPlace, it changes the file's last byte instead and sets its mtime back:
// same size, same mtime, other content.
func touchSome(dir string, limit int64, inPlace bool) (touched []string) {
	n := 0
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	k := max(1, n/500)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || k == 0 {
			return filepath.SkipAll
		}
		if d.IsDir() && d.Name() == "newdep" {
			return filepath.SkipDir
		}
		if strings.HasPrefix(d.Name(), ".tekton-cache") {
			return nil // the restore state: saves skip it
		}
		if fi, err := d.Info(); err == nil && d.Type().IsRegular() && fi.Size() <= limit && (!inPlace || fi.Size() > 0) {
			if inPlace {
				check(changeLastByte(p, fi))
			} else if f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0); err == nil {
				f.Write([]byte{'\n'})
				f.Close()
			} else {
				return nil
			}
			touched = append(touched, p)
			k--
		}
		return nil
	})
	return touched
}

// changeLastByte flips a bit of p's last byte and sets its mtime back to
// what it was (fi).
func changeLastByte(p string, fi fs.FileInfo) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := xorLastByte(f, f, fi.Size(), 1); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chtimes(p, fi.ModTime(), fi.ModTime())
}

// diffTrees returns the first difference between the trees a and b
// (types, modes, mtimes, sizes, contents, link targets; the restore state
// left out), or "".
func diffTrees(a, b string) string {
	seen := map[string]bool{}
	diff := ""
	filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			diff = err.Error()
			return filepath.SkipAll
		}
		rel, _ := filepath.Rel(a, p)
		if rel == ".tekton-cache-state" {
			return nil
		}
		seen[rel] = true
		if d := diffEntry(p, filepath.Join(b, rel), rel == "."); d != "" {
			diff = rel + ": " + d
			return filepath.SkipAll
		}
		return nil
	})
	if diff != "" {
		return diff
	}
	filepath.WalkDir(b, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(b, p)
		if err == nil && !seen[rel] && rel != ".tekton-cache-state" {
			diff = rel + ": not in the saved tree"
			return filepath.SkipAll
		}
		return nil
	})
	return diff
}

func diffEntry(pa, pb string, top bool) string {
	fa, err := os.Lstat(pa)
	if err != nil {
		return err.Error()
	}
	fb, err := os.Lstat(pb)
	if err != nil {
		return err.Error()
	}
	switch {
	case fa.Mode() != fb.Mode():
		return fmt.Sprintf("mode %v, restored %v", fa.Mode(), fb.Mode())
	case !fa.IsDir() && fa.Size() != fb.Size():
		return fmt.Sprintf("size %d, restored %d", fa.Size(), fb.Size())
	case !top && !fa.IsDir() && !fa.ModTime().Equal(fb.ModTime()):
		return fmt.Sprintf("mtime %v, restored %v", fa.ModTime(), fb.ModTime())
	case fa.Mode()&fs.ModeSymlink != 0:
		ta, _ := os.Readlink(pa)
		tb, _ := os.Readlink(pb)
		if ta != tb {
			return fmt.Sprintf("link to %q, restored %q", ta, tb)
		}
	case fa.Mode().IsRegular():
		same, err := sameContent(pa, pb)
		if err != nil {
			return err.Error()
		}
		if !same {
			return "content differs"
		}
	}
	return ""
}

// comparePool holds sameContent's buffers: trees of many small files
// (a Go cache) spent most of a comparison allocating them.
var comparePool = sync.Pool{New: func() any { return &[2][]byte{make([]byte, 1<<20), make([]byte, 1<<20)} }}

// sameContent compares two files of the same size, 1 MiB at a time.
func sameContent(pa, pb string) (bool, error) {
	fa, err := os.Open(pa)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(pb)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	bufs := comparePool.Get().(*[2][]byte)
	defer comparePool.Put(bufs)
	ba, bb := bufs[0], bufs[1]
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if erra == io.EOF || erra == io.ErrUnexpectedEOF {
			return errb == erra, nil
		}
		if erra != nil {
			return false, erra
		}
		if errb != nil {
			return false, errb
		}
	}
}

// startRegistry starts a registry storing into root, listening on listen
// (a free port of 127.0.0.1 when empty), its command line prefixed by wrap
// (ip netns exec NS).
func startRegistry(root, listen string, wrap ...string) (addr string, stop func()) {
	addr = listen
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		addr = l.Addr().String()
		l.Close()
	}
	cfg := filepath.Join(filepath.Dir(root), "registry.yml")
	check(os.WriteFile(cfg, []byte("version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: "+root+"}, delete: {enabled: true}}\nhttp: {addr: "+addr+"}\n"), 0o644))
	args := append(wrap, "registry", "serve", cfg)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // gone with us, even after log.Fatal
	check(cmd.Start())
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 300 {
			log.Fatalf("registry did not start on %s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return addr, func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
}

func report() {
	var b strings.Builder
	if len(rows) > 0 {
		fmt.Fprintf(&b, "| corpus | store | scenario | wall | CPU | peak RSS | sent or fetched | files hashed | vs floor | floor |\n")
		fmt.Fprintf(&b, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	}
	for _, r := range rows {
		hashed := "-"
		if r.r.hashed >= 0 {
			hashed = fmt.Sprint(r.r.hashed)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f s | %.2f s | %d MiB | %s | %s | **%.2fx** | %s %.2f s |\n",
			r.corpus, r.store, r.scenario, r.r.wall.Seconds(), r.r.cpu.Seconds(), r.r.rssKB/1024, mib(r.r.stored), hashed,
			r.r.wall.Seconds()/r.floor.wall.Seconds(), strings.ReplaceAll(r.floorName, "|", `\|`), r.floor.wall.Seconds())
	}
	for _, r := range rows {
		if r.scenario == "incremental save" || r.scenario == "warm restore" {
			fmt.Fprintf(&b, "\n%s/%s %s: %s\n", r.corpus, r.store, r.scenario, r.r.note)
		}
	}
	reportNet(&b)
	reportServeLoad(&b)
	fmt.Print(b.String())
	if *out != "" {
		check(os.WriteFile(*out, []byte(b.String()), 0o644))
	}
}
