package main

// The shaped network: the registry (oci) and MinIO (s3) run in a network
// namespace joined to ours by a veth pair whose two ends are rate limited
// by tbf (one qdisc per direction), and the cache reaches them through a
// delay line in this process (internal/delayline, on 127.0.0.1) that
// forwards every chunk -net-delay later in each direction, with a TCP-like
// window. netem, which would give the delay in the kernel, is missing on
// this machine. Cold save and cold restore are reported as a fraction of
// the link rate, next to one HTTP PUT and one GET of the same number of
// bytes through the same link (the floor: a single stream) and to the
// reference tool's single stream (crane append / crane blob of its tgz).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/delayline"
)

var (
	netRates   = flag.String("net", "1gbit,100mbit", "rates of the shaped link (tc tbf syntax: kbit, mbit, gbit); empty: no network rows")
	netDelay   = flag.Duration("net-delay", 20*time.Millisecond, "one-way delay of the shaped link (each direction; a round trip is twice it)")
	netWindow  = flag.Int("net-window", delayline.DefaultWindow, "most bytes in flight per TCP stream and direction on the shaped link")
	netCorpora = flag.String("net-corpora", "go", "corpora also run behind the shaped link")
	netStores  = flag.String("net-stores", "oci,s3", "stores run behind the shaped link: oci, s3")
	netRef     = flag.Bool("net-reference", true, "also time the reference tool's push and pull (oci) behind the shaped link")
	netProfile = flag.String("net-profile", "", "write a CPU profile of each cache run behind the shaped link into this directory")
)

// The two ends of the veth pair: a /30 of the link-local range, routed
// nowhere but between this namespace and the bench's.
const (
	hostIP = "169.254.77.1"
	nsIP   = "169.254.77.2"
)

// Ports inside the namespace, which has nothing else listening.
const (
	nsRegistryPort = 5000
	nsMinIOPort    = 9000
	nsSinkPort     = 8000
)

// MinIO's credentials in the bench.
const (
	minioUser   = "benchminio"
	minioSecret = "bench-minio-secret-77"
	minioBucket = "bench"
)

type netRow struct {
	corpus, store, link, scenario string
	wall                          time.Duration
	bytes                         int64
	rate                          float64 // bits per second
	floor                         time.Duration
	floorBytes                    int64
	floorName                     string
}

var (
	netRows    []netRow
	netSkipped string // why the network rows were skipped
	theLink    *link
)

// link is the namespace and its veth pair.
type link struct {
	ns, hostIf, nsIf string
	sink             *http.Server
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newLink makes the namespace and the veth pair, addresses them and starts
// the floor's HTTP sink inside.
func newLink() (*link, error) {
	removeStaleLinks()
	id := os.Getpid()
	l := &link{ns: fmt.Sprintf("tcbench%d", id), hostIf: fmt.Sprintf("tcbh%d", id), nsIf: fmt.Sprintf("tcbn%d", id)}
	if err := run("ip", "netns", "add", l.ns); err != nil {
		return nil, err
	}
	for _, c := range [][]string{
		{"ip", "link", "add", l.hostIf, "type", "veth", "peer", "name", l.nsIf, "netns", l.ns},
		{"ip", "addr", "add", hostIP + "/30", "dev", l.hostIf},
		{"ip", "link", "set", l.hostIf, "up"},
		{"ip", "-n", l.ns, "addr", "add", nsIP + "/30", "dev", l.nsIf},
		{"ip", "-n", l.ns, "link", "set", l.nsIf, "up"},
		{"ip", "-n", l.ns, "link", "set", "lo", "up"},
	} {
		if err := run(c...); err != nil {
			l.close()
			return nil, err
		}
	}
	ln, err := l.listen(fmt.Sprintf("%s:%d", nsIP, nsSinkPort))
	if err != nil {
		l.close()
		return nil, err
	}
	l.sink = &http.Server{Handler: http.HandlerFunc(sink)}
	go l.sink.Serve(ln)
	return l, nil
}

// removeStaleLinks deletes the namespaces of earlier runs that ended
// without closing theirs (log.Fatal): tcbench<pid> where pid is gone.
func removeStaleLinks() {
	names, _ := filepath.Glob("/run/netns/tcbench*")
	for _, n := range names {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(n), "tcbench"))
		if err == nil && unix.Kill(pid, 0) == unix.ESRCH {
			run("ip", "netns", "del", filepath.Base(n))
		}
	}
}

func (l *link) close() {
	if l.sink != nil {
		l.sink.Close()
	}
	if err := run("ip", "netns", "del", l.ns); err != nil {
		log.Printf("shaped network: %v", err)
	}
}

// shape limits each direction of the veth pair to rate (tc syntax), or
// lifts the limit when rate is unshaped.
func (l *link) shape(rate string) error {
	if rate == unshaped {
		for _, c := range [][]string{{"tc", "qdisc", "del", "dev", l.hostIf, "root"}, {"tc", "-n", l.ns, "qdisc", "del", "dev", l.nsIf, "root"}} {
			run(c...) // fails when there is no qdisc to delete
		}
		return nil
	}
	bps, err := parseRate(rate)
	if err != nil {
		return err
	}
	// A burst of 4 ms at the rate (at least 64 KiB, one GSO packet), and a
	// queue of 20 ms before tbf drops.
	burst := strconv.FormatInt(max(64<<10, int64(bps/8/250)), 10)
	for _, pre := range [][]string{{"tc"}, {"tc", "-n", l.ns}} {
		dev := l.hostIf
		if len(pre) > 1 {
			dev = l.nsIf
		}
		if err := run(append(pre, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", burst, "latency", "20ms")...); err != nil {
			return err
		}
	}
	return nil
}

// listen opens a TCP listener inside the namespace: a socket stays in the
// namespace it was made in, so it is made on a thread moved there, which
// then ends with its goroutine (a locked thread is not reused).
func (l *link) listen(addr string) (net.Listener, error) {
	type res struct {
		l   net.Listener
		err error
	}
	ch := make(chan res)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with us
		f, err := os.Open("/run/netns/" + l.ns)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- res{ln, err}
	}()
	r := <-ch
	return r.l, r.err
}

// unshaped is the pseudo-rate of the reference rows: the same servers and
// path, without tbf, delay or window, so that their time is what the CPU
// allows (the machine is shared) and the shaped rows can be read against it.
const unshaped = "unshaped"

// front starts a delay line on 127.0.0.1 to port inside the namespace:
// without delay, and a window no transfer fills, for the unshaped rows.
func front(port int, rate string) *delayline.Proxy {
	cfg := delayline.Config{Delay: *netDelay, Window: *netWindow}
	if rate == unshaped {
		cfg = delayline.Config{Window: 1 << 30, InitialWindow: 1 << 30}
	}
	p, err := delayline.Listen("127.0.0.1:0", fmt.Sprintf("%s:%d", nsIP, port), cfg)
	check(err)
	return p
}

// sink is the floor's server: PUT reads the body and drops it, GET
// /?n=N sends N zero bytes.
func sink(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPut:
		io.Copy(io.Discard, r.Body)
	case http.MethodGet:
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.CopyN(w, zeros{}, n)
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// floorTransfer times one HTTP PUT (up) or GET of n bytes to the sink
// through a fresh delay line and connection.
func floorTransfer(up bool, n int64, rate string) time.Duration {
	p := front(nsSinkPort, rate)
	defer p.Close()
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer c.CloseIdleConnections()
	url := fmt.Sprintf("http://%s/?n=%d", p.Addr(), n)
	start := time.Now()
	var resp *http.Response
	var err error
	if up {
		req, _ := http.NewRequest(http.MethodPut, url, io.LimitReader(zeros{}, n))
		req.ContentLength = n
		resp, err = c.Do(req)
	} else {
		resp, err = c.Get(url)
	}
	check(err)
	got, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	check(err)
	el := time.Since(start)
	if !up && got != n {
		log.Fatalf("floor GET: %d bytes, want %d", got, n)
	}
	name := "HTTP GET"
	if up {
		name = "HTTP PUT"
	}
	log.Printf("  %-40s %6.2fs wall (%s)", "floor: one "+name, el.Seconds(), mib(n))
	return el
}

// parseRate reads a tc rate (100mbit, 1gbit, 500kbit) in bits per second.
func parseRate(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err == nil && v > 0 {
				return v * u.mult, nil
			}
		}
	}
	return 0, fmt.Errorf("rate %q: want a number and kbit, mbit or gbit", s)
}

// runNet runs the cold save and restore of a corpus behind the shaped
// link, on every -net-stores store and -net rate. Without a namespace (not
// root, no ip or tc) it says so once and skips.
func runNet(corpusName string, folders []string) {
	if *netRates == "" || !slices.Contains(strings.Split(*netCorpora, ","), corpusName) || netSkipped != "" {
		return
	}
	rates := strings.Split(*netRates, ",")
	for _, r := range rates {
		_, err := parseRate(r)
		check(err)
	}
	if theLink == nil {
		l, err := newLink()
		if err != nil {
			netSkipped = err.Error()
			log.Printf("shaped network: skipped, cannot make a network namespace and veth pair (%v)", err)
			return
		}
		theLink = l
	}
	for _, s := range strings.Split(*netStores, ",") {
		runNetStore(corpusName, folders, s, rates)
	}
}

// closeNet removes the namespace, if one was made.
func closeNet() {
	if theLink != nil {
		theLink.close()
		theLink = nil
	}
}

func runNetStore(corpusName string, folders []string, storeKind string, rates []string) {
	log.Printf("%s corpus, %s store, shaped link (%v one way, window %s)", corpusName, storeKind, *netDelay, mib(int64(*netWindow)))
	work := filepath.Join(*dir, "run", corpusName+"-net-"+storeKind)
	check(os.RemoveAll(work))
	check(os.MkdirAll(work, 0o755))
	defer func() {
		os.RemoveAll(work)
		settle()
	}()
	var port int
	var env []string
	switch storeKind {
	case "oci":
		port = nsRegistryPort
		_, stop := startRegistry(filepath.Join(work, "registry"), fmt.Sprintf("%s:%d", nsIP, port), "ip", "netns", "exec", theLink.ns)
		defer stop()
	case "s3":
		port = nsMinIOPort
		stop := startMinIO(filepath.Join(work, "minio"))
		defer stop()
		env = []string{"AWS_ACCESS_KEY_ID=" + minioUser, "AWS_SECRET_ACCESS_KEY=" + minioSecret, "AWS_REGION=us-east-1",
			"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true", "AWS_PROFILE="}
	default:
		log.Fatalf("unknown store %q behind the shaped link (oci, s3)", storeKind)
	}
	storeURL := func(p *delayline.Proxy, name string) string {
		if storeKind == "oci" {
			return "oci://" + p.Addr() + "/bench/" + name
		}
		return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&use_path_style=true&disable_https=true&region=us-east-1", minioBucket, name, p.Addr())
	}
	cache := func(name, args, profile string) result {
		e := env
		if *netProfile != "" {
			check(os.MkdirAll(*netProfile, 0o755))
			e = append(slices.Clone(env), "CACHE_CPUPROFILE="+filepath.Join(*netProfile, corpusName+"-"+storeKind+"-"+profile+".prof"))
		}
		r := measure(name, q(*bin)+" "+args+" --output json", e...)
		r.stored = sentOrFetched(r.stdout)
		return r
	}
	// The reference tool's tgz, made once (its time is in the main table).
	var tgz, tgzDigest string
	var tgzSize int64
	if storeKind == "oci" && *netRef {
		tgz = filepath.Join(work, "ref.tgz")
		parent, names := filepath.Dir(folders[0]), ""
		for _, f := range folders {
			names += " " + q(filepath.Base(f))
		}
		// Exit status 1: a file changed while read (the corpus is shared
		// with other runs, whose saves write its state file).
		measure("(reference tool's tgz, not timed)", fmt.Sprintf("tar -C %s --exclude=.tekton-cache-state -czf %s %s || [ $? -eq 1 ]", q(parent), q(tgz), names))
		tgzDigest, tgzSize = fileDigest(tgz)
	}
	for _, rate := range append([]string{unshaped}, rates...) {
		check(theLink.shape(rate))
		bps, _ := parseRate(rate) // 0: unshaped
		log.Printf(" link %s", rate)
		p := front(port, rate)
		defer p.Close()
		add := func(scenario string, r time.Duration, n int64, floor time.Duration, fn int64, floorName string) {
			netRows = append(netRows, netRow{corpusName, storeKind, rate, scenario, r, n, bps, floor, fn, floorName})
		}
		var saves, restores []result
		var puts, gets []time.Duration
		var restored []string
		for i := range *reps {
			for _, f := range folders {
				os.Remove(filepath.Join(f, ".tekton-cache-state"))
			}
			name := fmt.Sprintf("net-%s-%d", rate, i)
			saves = append(saves, cache("cache save (cold, shaped)", fmt.Sprintf("save --store %s --key k1 %s", q(storeURL(p, name)), folderFlags(folders)), fmt.Sprintf("save-%s-%d", rate, i)))
			puts = append(puts, floorTransfer(true, saves[0].stored, rate))
			dst := under(filepath.Join(work, fmt.Sprintf("ws-%s-%d", rate, i)), folders)
			restores = append(restores, cache("cache restore (cold, shaped)", fmt.Sprintf("restore --store %s --key k1 %s", q(storeURL(p, name)), folderFlags(dst)), fmt.Sprintf("restore-%s-%d", rate, i)))
			gets = append(gets, floorTransfer(false, restores[0].stored, rate))
			restored = append(restored, filepath.Dir(dst[0]))
		}
		// Deleted only now, and followed by a pause: a restore right after
		// deleting a restored tree creates files at half speed (settle).
		for _, d := range restored {
			check(os.RemoveAll(d))
		}
		settle()
		s, r := median(saves), median(restores)
		put, get := medianDuration(puts), medianDuration(gets)
		add("cold save", s.wall, s.stored, put, saves[0].stored, "HTTP PUT")
		add("cold restore", r.wall, r.stored, get, restores[0].stored, "HTTP GET")
		if storeKind == "oci" && *netRef {
			ref := p.Addr() + "/bench/ref-" + rate
			push := measure("reference: crane append (push only)", fmt.Sprintf("crane append -f %s -t %s:k1", q(tgz), ref))
			pull := measure("reference: crane blob (pull only)", fmt.Sprintf("crane blob %s@sha256:%s > /dev/null", ref, tgzDigest))
			add("reference tool push", push.wall, tgzSize, medianDuration(puts), saves[0].stored, "HTTP PUT")
			add("reference tool pull", pull.wall, tgzSize, medianDuration(gets), restores[0].stored, "HTTP GET")
		}
	}
}

func medianDuration(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// sentOrFetched reads what a cache run sent or fetched from its JSON
// outcome (0 when it does not say).
func sentOrFetched(stdout string) int64 {
	var out struct {
		Sent       int64 `json:"uploaded-bytes"`
		Downloaded int64 `json:"downloaded"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		return 0
	}
	return out.Sent + out.Downloaded
}

func fileDigest(p string) (string, int64) {
	f, err := os.Open(p)
	check(err)
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	check(err)
	return hex.EncodeToString(h.Sum(nil)), n
}

// startMinIO starts MinIO inside the namespace, on data dir root, and
// creates the bench's bucket.
func startMinIO(root string) (stop func()) {
	check(os.MkdirAll(root, 0o755))
	addr := fmt.Sprintf("%s:%d", nsIP, nsMinIOPort)
	cmd := exec.Command("ip", "netns", "exec", theLink.ns, "minio", "server", root, "--address", addr, "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioSecret, "MINIO_BROWSER=off")
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGTERM}
	check(cmd.Start())
	stop = func() { cmd.Process.Signal(unix.SIGTERM); cmd.Wait() }
	client := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://" + addr), UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: minioUser, SecretAccessKey: minioSecret}, nil
		}),
	})
	// MinIO answers 503 for a moment after it starts listening.
	for i := 0; ; i++ {
		_, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(minioBucket)})
		if err == nil {
			return stop
		}
		var opErr *net.OpError
		if i > 300 || !(errors.As(err, &opErr) || strings.Contains(err.Error(), "StatusCode: 503")) {
			stop()
			log.Fatalf("creating MinIO's bucket: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// reportNet writes the shaped-network table.
func reportNet(b *strings.Builder) {
	if netSkipped != "" {
		fmt.Fprintf(b, "\nShaped network: skipped (%s).\n", netSkipped)
		return
	}
	if len(netRows) == 0 {
		return
	}
	fmt.Fprintf(b, "\nShaped network: tbf per direction, %v one way (round trip %v) in a user-space delay line, %s window per stream and direction, slow start per connection.\n\n",
		*netDelay, 2**netDelay, mib(int64(*netWindow)))
	fmt.Fprintf(b, "| corpus | store | link | scenario | wall | sent or fetched | throughput | of the link | floor: one stream | floor of the link |\n")
	fmt.Fprintf(b, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	frac := func(n int64, d time.Duration, bps float64) float64 { return float64(n) * 8 / d.Seconds() / bps }
	for _, r := range netRows {
		of, floorOf := "-", "-"
		if r.rate > 0 {
			of, floorOf = fmt.Sprintf("**%.0f%%**", 100*frac(r.bytes, r.wall, r.rate)), fmt.Sprintf("%.0f%%", 100*frac(r.floorBytes, r.floor, r.rate))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %.2f s | %s | %.1f MiB/s | %s | %s %.2f s | %s |\n",
			r.corpus, r.store, r.link, r.scenario, r.wall.Seconds(), mib(r.bytes), float64(r.bytes)/(1<<20)/r.wall.Seconds(),
			of, r.floorName, r.floor.Seconds(), floorOf)
	}
}
