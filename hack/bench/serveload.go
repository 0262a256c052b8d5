package main

// The load test of cache-serve (issue 17): -serve-clients `cache`
// processes at once, each with its own workspace holding a Go cache of
// -serve-mb MB, save then restore through one cache-serve process over a
// directory on 127.0.0.1, then the same clients on file:// directly.
// Clients pair up on keys: the two of a pair save the same tree under the
// same key at the same moment, and every tree shares all but about 2% of
// its bytes with the others, so the server sees concurrent puts of the
// same blobs and most of a save is already there. Every restore is
// compared with the tree saved under its key.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	serveClients = flag.Int("serve-clients", 20, "concurrent clients of the cache-serve load test (0: no load test)")
	serveMB      = flag.Int("serve-mb", 200, "MB of Go cache each load-test client saves and restores")
	serveBin     = flag.String("cache-serve", "bin/cache-serve", "the cache-serve binary of the load test")
)

// loadPhase is one operation of every client at once against one store.
type loadPhase struct {
	store, op string
	wall      time.Duration
	logical   int64 // bytes of the trees saved or restored, all clients
	moved     int64 // bytes sent to or fetched from the store, all clients
	clientRSS int64 // the largest client's peak RSS, KiB
	failures  []string
}

var (
	loadPhases []loadPhase
	loadNotes  []string
)

// checkServeBin makes -cache-serve absolute and fails, before anything
// runs, when the load test is asked for and the binary is missing: found
// at the end, after the other scenarios, it lost their report.
func checkServeBin() {
	if *serveClients <= 0 {
		return
	}
	sb, err := filepath.Abs(*serveBin)
	check(err)
	if _, err := os.Stat(sb); err != nil {
		log.Fatalf("the load test needs cache-serve: build it with `go build -o %s ./cmd/cache-serve`, pass -cache-serve, or -serve-clients 0", *serveBin)
	}
	*serveBin = sb
}

// runServeLoad runs the load test, when -serve-clients asks for one.
func runServeLoad() {
	n := *serveClients
	if n <= 0 {
		return
	}
	sb := *serveBin // checked by checkServeBin, before any run
	base := serveCorpus(filepath.Join(*dir, "corpus", fmt.Sprintf("go-%dmb", *serveMB)), int64(*serveMB)*1_000_000)
	treeBytes, treeFiles := int64(0), int64(0)
	for _, f := range base {
		b, c := treeSize(f)
		treeBytes, treeFiles = treeBytes+b, treeFiles+c
	}
	log.Printf("cache-serve load test: %d clients, each a Go cache of %.0f MB (%d files) and its own workspace", n, float64(treeBytes)/1e6, treeFiles)
	work := filepath.Join(*dir, "run", "serve-load")
	check(os.RemoveAll(work))
	check(os.MkdirAll(work, 0o755))
	defer os.RemoveAll(work)

	// Workspaces: links to the corpus' files (saves only read them), in
	// directories of their own (where saves write their state), plus the
	// pair's own cache entries.
	keys := make([]string, n)
	ws := make([][]string, n)
	var extra int64
	for i := range n {
		keys[i] = fmt.Sprintf("go-linux-amd64-%02d", i/2)
		ws[i] = under(filepath.Join(work, fmt.Sprintf("ws-%02d", i)), base)
		for j, f := range base {
			check(linkTree(f, ws[i][j]))
		}
		extra = addGoCacheEntries(ws[i][0], base[0], i/2, treeBytes/50)
	}
	loadNotes = append(loadNotes, fmt.Sprintf("%d clients, %d keys (two clients a key, saving the same tree at once); each tree %.0f MB in %d files: this machine's Go build cache and module cache (%s) and %.1f MB of cache entries of its own key",
		n, (n+1)/2, float64(treeBytes+extra)/1e6, treeFiles, corpusSource(base), float64(extra)/1e6))

	// Through cache-serve.
	storeDir := filepath.Join(work, "serve-store")
	srv := startServe(sb, storeDir, filepath.Join(work, "cache-serve.log"))
	loadRound("cache-serve", srv.url, keys, ws, work)
	hwm := srv.stop()
	stored, _ := treeSize(storeDir)
	loadNotes = append(loadNotes, fmt.Sprintf("cache-serve peak RSS (VmHWM): %s; %s; the store holds %.0f MB after %d saves of %.0f MB",
		mib(hwm<<10), srv.logVerdict(), float64(stored)/1e6, n, float64(treeBytes+extra)/1e6))
	check(os.RemoveAll(storeDir))
	settle()

	// The same clients on file:// directly.
	fileDir := filepath.Join(work, "file-store")
	loadRound("file://", "file://"+fileDir, keys, ws, work)
}

// loadRound saves every workspace at once into storeURL, then restores
// every key at once into new folders and compares them with what was saved.
func loadRound(name, storeURL string, keys []string, ws [][]string, work string) {
	n := len(keys)
	logical := int64(0)
	for i := range n {
		for _, f := range ws[i] {
			b, _ := treeSize(f)
			logical += b
		}
		for _, f := range ws[i] {
			os.Remove(filepath.Join(f, ".tekton-cache-state")) // every save is cold
		}
	}
	save := runClients(name, "save", n, logical, func(i int) []string {
		return append([]string{"save", "--store", storeURL, "--key", keys[i]}, folderArgs(ws[i])...)
	})
	loadPhases = append(loadPhases, save)

	dst := make([][]string, n)
	for i := range n {
		dst[i] = under(filepath.Join(work, fmt.Sprintf("restore-%02d", i)), ws[i])
	}
	restore := runClients(name, "restore", n, logical, func(i int) []string {
		return append([]string{"restore", "--store", storeURL, "--key", keys[i]}, folderArgs(dst[i])...)
	})
	// What each client restored is the tree saved under its key (both
	// clients of a key saved the same tree).
	verify, differ := time.Now(), 0
	var mu sync.Mutex
	sem := make(chan struct{}, runtime.NumCPU())
	var wg sync.WaitGroup
	for i := range n {
		for j := range ws[i] {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if d := diffTrees(ws[i][j], dst[i][j]); d != "" {
					mu.Lock()
					restore.failures = append(restore.failures, fmt.Sprintf("client %d restored a tree other than the one saved: %s", i, d))
					differ++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	log.Printf("  compared the %d restored trees with the saved ones in %.1f s: %d folders differ", n, time.Since(verify).Seconds(), differ)
	loadPhases = append(loadPhases, restore)
	for i := range n {
		check(os.RemoveAll(filepath.Dir(dst[i][0])))
	}
	for _, f := range restore.failures {
		log.Printf("  FAILED: %s", f)
	}
}

func folderArgs(folders []string) []string {
	var args []string
	for _, f := range folders {
		args = append(args, "--folder", f)
	}
	return args
}

// runClients starts n cache processes at once, with the arguments args(i)
// (and --strict: a cache error is a failure, not a warning), and waits for
// all of them, which save or restore trees of logical bytes in all. A client fails when it exits non-zero, reports an error or
// (a restore) did not fetch its key, or warns on stderr.
func runClients(storeName, op string, n int, logical int64, args func(i int) []string) loadPhase {
	p := loadPhase{store: storeName, op: op, logical: logical}
	type out struct {
		stdout, stderr bytes.Buffer
		err            error
		rss            int64
	}
	outs := make([]*out, n)
	cmds := make([]*exec.Cmd, n)
	check(exec.Command("sync").Run())
	start := time.Now()
	for i := range n {
		o := &out{}
		outs[i] = o
		cmds[i] = exec.Command(*bin, append(args(i), "--output", "json", "--strict")...)
		cmds[i].Stdout, cmds[i].Stderr = &o.stdout, &o.stderr
		check(cmds[i].Start())
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			outs[i].err = cmds[i].Wait()
			if ps := cmds[i].ProcessState; ps != nil {
				outs[i].rss = ps.SysUsage().(*syscall.Rusage).Maxrss
			}
		})
	}
	wg.Wait()
	p.wall = time.Since(start)
	for i, o := range outs {
		p.clientRSS = max(p.clientRSS, o.rss)
		var res struct {
			Error      string `json:"error"`
			Fetched    bool   `json:"fetched"`
			Sent       int64  `json:"uploaded-bytes"`
			Downloaded int64  `json:"downloaded"`
		}
		jerr := json.Unmarshal(bytes.TrimSpace(o.stdout.Bytes()), &res)
		p.moved += res.Sent + res.Downloaded
		var why []string
		if o.err != nil {
			why = append(why, o.err.Error())
		}
		if jerr != nil {
			why = append(why, "no JSON outcome: "+jerr.Error())
		}
		if res.Error != "" {
			why = append(why, res.Error)
		}
		if op == "restore" && !res.Fetched {
			why = append(why, "did not fetch its key")
		}
		for _, l := range strings.Split(o.stderr.String(), "\n") {
			if ll := strings.ToLower(l); strings.Contains(ll, "warning") || strings.Contains(ll, "error") {
				why = append(why, "stderr: "+l)
			}
		}
		if len(why) > 0 {
			p.failures = append(p.failures, fmt.Sprintf("client %d %s: %s", i, op, strings.Join(why, "; ")))
		}
	}
	log.Printf("  %-12s %-8s %d clients %6.2fs wall, %7.1f MB/s of trees, %s moved, %d failures", storeName, op, n, p.wall.Seconds(),
		float64(p.logical)/1e6/p.wall.Seconds(), mib(p.moved), len(p.failures))
	for _, f := range p.failures {
		log.Printf("  FAILED: %s", f)
	}
	return p
}

// server is a running cache-serve process.
type server struct {
	cmd     *exec.Cmd
	url     string
	logPath string
	log     *os.File
}

// startServe starts cache-serve over a new directory store on a free port
// of 127.0.0.1, anonymous reads and writes, no eviction, its log in logPath.
func startServe(bin, storeDir, logPath string) *server {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	addr := l.Addr().String()
	l.Close()
	f, err := os.Create(logPath)
	check(err)
	cmd := exec.Command(bin, "--store", "file://"+storeDir, "--listen", addr,
		"--allow-unauthenticated-reads", "--allow-unauthenticated-writes", "--gc-interval", "0")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	check(cmd.Start())
	s := &server{cmd: cmd, url: "http://" + addr, logPath: logPath, log: f}
	for i := 0; ; i++ {
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if i > 300 {
			log.Fatalf("cache-serve did not start on %s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop reads the server's peak RSS (KiB), then stops it with SIGTERM and
// checks that it exits 0.
func (s *server) stop() (hwmKB int64) {
	hwmKB = vmHWM(s.cmd.Process.Pid)
	check(s.cmd.Process.Signal(syscall.SIGTERM))
	if err := s.cmd.Wait(); err != nil {
		log.Fatalf("cache-serve ended with %v (log: %s)", err, s.logPath)
	}
	s.log.Close()
	return hwmKB
}

// vmHWM is the peak resident set of process pid, in KiB.
func vmHWM(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			check(err)
			return kb
		}
	}
	log.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// serveLogOK are the lines cache-serve logs when nothing fails.
var serveLogOK = []string{"serving ", "eviction off", "stopping: ", "stopped"}

// logVerdict says whether the server logged anything but its start and
// stop: every failed request (not a miss) is a line of its log.
func (s *server) logVerdict() string {
	f, err := os.Open(s.logPath)
	check(err)
	defer f.Close()
	var bad []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ok := false
		for _, p := range serveLogOK {
			ok = ok || strings.Contains(sc.Text(), p)
		}
		if !ok {
			bad = append(bad, sc.Text())
		}
	}
	check(sc.Err())
	if len(bad) == 0 {
		return "no request failed in its log"
	}
	for _, l := range bad {
		log.Printf("  cache-serve logged: %s", l)
	}
	return fmt.Sprintf("**%d lines of failures in its log** (first: %s)", len(bad), bad[0])
}

// serveCorpus returns root's gocache and gomodcache, a Go cache of about
// size bytes, built once: the first entries (in name order) of a real Go
// build cache, 60% of size, and whole modules of a real module cache with
// their download records, 40%. The caches are the bench's go corpus when
// it was built, else this machine's (go env GOCACHE GOMODCACHE).
func serveCorpus(root string, size int64) []string {
	gc, gm := filepath.Join(root, "gocache"), filepath.Join(root, "gomodcache")
	srcGC, srcGM := goCaches()
	stamp := fmt.Sprintf("%s %s %d\n", srcGC, srcGM, size)
	if done, err := os.ReadFile(filepath.Join(root, ".done")); err == nil && string(done) == stamp {
		return []string{gc, gm}
	}
	log.Printf("building the load test's corpus: %.0f MB of %s and %s ...", float64(size)/1e6, srcGC, srcGM)
	check(os.RemoveAll(root))
	left := size * 6 / 10
	check(filepath.WalkDir(srcGC, func(p string, d fs.DirEntry, err error) error {
		if err != nil || left <= 0 {
			return err
		}
		if d.Type().IsRegular() {
			if left -= copyInto(p, filepath.Join(gc, rel(srcGC, p))); left <= 0 {
				return filepath.SkipAll
			}
		}
		return nil
	}))
	left = size * 4 / 10
	check(filepath.WalkDir(srcGM, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || left <= 0 {
			return err
		}
		r := rel(srcGM, p)
		if r == "cache" {
			return filepath.SkipDir
		}
		mod, ver, ok := strings.Cut(r, "@")
		if !ok {
			return nil
		}
		// A module version: its tree, and what `go mod download` keeps of it.
		check(filepath.WalkDir(p, func(q string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				left -= copyInto(q, filepath.Join(gm, rel(srcGM, q)))
			}
			return err
		}))
		for _, ext := range []string{".info", ".mod", ".zip", ".ziphash"} {
			dl := filepath.Join("cache", "download", mod, "@v", ver+ext)
			if _, err := os.Stat(filepath.Join(srcGM, dl)); err == nil {
				left -= copyInto(filepath.Join(srcGM, dl), filepath.Join(gm, dl))
			}
		}
		if left <= 0 {
			return filepath.SkipAll
		}
		return filepath.SkipDir
	}))
	if left > 0 {
		log.Fatalf("%s holds less than %.0f MB of modules: build the go corpus first (-corpora go)", srcGM, float64(size*4/10)/1e6)
	}
	check(os.WriteFile(filepath.Join(root, ".done"), []byte(stamp), 0o644))
	return []string{gc, gm}
}

// goCaches are the Go caches the load test's corpus is cut from.
func goCaches() (gocache, gomodcache string) {
	goRoot := filepath.Join(*dir, "corpus", "go")
	if _, err := os.Stat(filepath.Join(goRoot, ".done")); err == nil {
		return filepath.Join(goRoot, "gocache"), filepath.Join(goRoot, "gomodcache")
	}
	out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE").Output()
	check(err)
	f := strings.Fields(string(out))
	if len(f) != 2 {
		log.Fatalf("go env GOCACHE GOMODCACHE: %q", out)
	}
	return f[0], f[1]
}

func corpusSource(base []string) string {
	gc, gm := goCaches()
	if strings.HasPrefix(gc, *dir) {
		return "cut from the go corpus"
	}
	return "cut from " + gc + " and " + gm + "; " + runtime.Version()
}

func rel(base, p string) string {
	r, err := filepath.Rel(base, p)
	check(err)
	return r
}

// copyInto copies the regular file src to dst (copyFile: mode and mtime
// kept), making dst's parents 0755, and returns its size.
func copyInto(src, dst string) int64 {
	check(os.MkdirAll(filepath.Dir(dst), 0o755))
	fi, err := os.Lstat(src)
	check(err)
	check(copyFile(src, dst, fi, 0))
	return fi.Size()
}

// linkTree makes dst a tree of new directories (modes and mtimes kept)
// holding hard links to src's files.
func linkTree(src, dst string) error {
	var dirs []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		t := filepath.Join(dst, rel(src, p))
		switch {
		case d.IsDir():
			dirs = append(dirs, p)
			return os.MkdirAll(t, 0o755)
		case d.Type().IsRegular():
			return os.Link(p, t)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- { // children first: creating them moved the parents' mtimes
		fi, err := os.Stat(dirs[i])
		if err != nil {
			return err
		}
		t := filepath.Join(dst, rel(src, dirs[i]))
		if err := os.Chmod(t, fi.Mode().Perm()|0o700); err != nil {
			return err
		}
		if err := os.Chtimes(t, fi.ModTime(), fi.ModTime()); err != nil {
			return err
		}
	}
	return nil
}

// entryTime is the mtime of the entries addGoCacheEntries writes.
var entryTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// addGoCacheEntries writes about n bytes of new build cache entries of key
// number k into the Go build cache gocache (entries named and laid out as
// Go writes them, their bytes real compiler output of corpus with k's own
// header, so that no two keys share them) and returns their size.
func addGoCacheEntries(gocache, corpus string, k int, n int64) int64 {
	var outputs []string
	filepath.WalkDir(corpus, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, "-d") && len(outputs) < 64 {
			outputs = append(outputs, p)
		}
		return nil
	})
	if len(outputs) == 0 {
		log.Fatalf("no build outputs (*-d) in %s", corpus)
	}
	var written int64
	for j := 0; written < n; j++ {
		data, err := os.ReadFile(outputs[j%len(outputs)])
		check(err)
		data = append(fmt.Appendf(nil, "key %d entry %d\n", k, j), data...)
		id := sha256.Sum256(data)
		name := fmt.Sprintf("%x-d", id)
		p := filepath.Join(gocache, name[:2], name)
		check(os.MkdirAll(filepath.Dir(p), 0o755))
		check(os.WriteFile(p, data, 0o644))
		// The two clients of a key write the same tree: mtimes included.
		check(os.Chtimes(p, entryTime, entryTime))
		written += int64(len(data))
	}
	return written
}

// reportServeLoad writes the load test's table.
func reportServeLoad(b *strings.Builder) {
	if len(loadPhases) == 0 {
		return
	}
	fmt.Fprintf(b, "\ncache-serve load test (%s).\n\n", strings.Join(loadNotes[:1], ""))
	fmt.Fprintf(b, "| store | operation | clients | wall | aggregate (trees) | sent or fetched | largest client's peak RSS | failed |\n")
	fmt.Fprintf(b, "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, p := range loadPhases {
		fmt.Fprintf(b, "| %s | %s | %d | %.2f s | %.1f MB/s | %s | %s | %d |\n", p.store, p.op, *serveClients, p.wall.Seconds(),
			float64(p.logical)/1e6/p.wall.Seconds(), mib(p.moved), mib(p.clientRSS<<10), len(p.failures))
	}
	for _, n := range loadNotes[1:] {
		fmt.Fprintf(b, "\n%s.\n", n)
	}
}
