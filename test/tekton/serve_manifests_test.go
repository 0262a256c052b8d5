package tekton

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

var (
	serveBinOnce sync.Once
	serveBinErr  error
)

// serveBinary builds cache-serve next to the `cache` binary (TestMain
// removes that directory).
func serveBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(cacheBinary(t)), "cache-serve")
	serveBinOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", bin, "github.com/tekton-cache/tekton-cache/cmd/cache-serve")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			serveBinErr = fmt.Errorf("go build ./cmd/cache-serve: %v\n%s", err, out)
		}
	})
	if serveBinErr != nil {
		t.Fatal(serveBinErr)
	}
	return bin
}

// helpFlag matches a flag line of cobra's --help: the name, and the type
// word when the flag takes a value (a bool has none).
var helpFlag = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9-]+)(?: ([a-zA-Z]+))?\s{2,}`)

// serveFlags parses `cache-serve --help`: flag name -> whether it takes a
// value.
func serveFlags(t testing.TB) map[string]bool {
	t.Helper()
	out, err := exec.Command(serveBinary(t), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("cache-serve --help: %v\n%s", err, out)
	}
	flags := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if m := helpFlag.FindStringSubmatch(l); m != nil {
			flags[m[1]] = m[2] != ""
		}
	}
	if len(flags) < 10 || !flags["store"] || flags["insecure"] {
		t.Fatalf("parsed %d flags from cache-serve --help (store takes a value: %v): the parser is wrong\n%s", len(flags), flags["store"], out)
	}
	return flags
}

// kustomizeBuild builds a kustomization directory with kustomize's own
// library, as `kubectl apply -k` would, and decodes the output strictly.
func kustomizeBuild(t testing.TB, dir string) []Object {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	data, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(dir, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return objs
}

// serveSet is the objects of one build of config/serve, by kind.
type serveSet struct {
	Deployment  *appsv1.Deployment
	Service     *corev1.Service
	SA          *corev1.ServiceAccount
	Binding     *rbacv1.ClusterRoleBinding
	Secret      *corev1.Secret
	PVCs        []*corev1.PersistentVolumeClaim
	Policy      *networkingv1.NetworkPolicy
	PDB         *policyv1.PodDisruptionBudget
	unknownKind []string
}

func collect(objs []Object) (serveSet, []string) {
	var s serveSet
	var problems []string
	one := func(kind string, have bool) {
		if have {
			problems = append(problems, "more than one "+kind)
		}
	}
	for _, o := range objs {
		switch x := o.Obj.(type) {
		case *appsv1.Deployment:
			one("Deployment", s.Deployment != nil)
			s.Deployment = x
		case *corev1.Service:
			one("Service", s.Service != nil)
			s.Service = x
		case *corev1.ServiceAccount:
			one("ServiceAccount", s.SA != nil)
			s.SA = x
		case *rbacv1.ClusterRoleBinding:
			one("ClusterRoleBinding", s.Binding != nil)
			s.Binding = x
		case *corev1.Secret:
			one("Secret", s.Secret != nil)
			s.Secret = x
		case *corev1.PersistentVolumeClaim:
			s.PVCs = append(s.PVCs, x)
		case *networkingv1.NetworkPolicy:
			one("NetworkPolicy", s.Policy != nil)
			s.Policy = x
		case *policyv1.PodDisruptionBudget:
			one("PodDisruptionBudget", s.PDB != nil)
			s.PDB = x
		default:
			s.unknownKind = append(s.unknownKind, o.String())
		}
	}
	for _, k := range s.unknownKind {
		problems = append(problems, "unexpected object "+k)
	}
	for kind, missing := range map[string]bool{
		"Deployment": s.Deployment == nil, "Service": s.Service == nil, "ServiceAccount": s.SA == nil,
		"ClusterRoleBinding": s.Binding == nil, "Secret": s.Secret == nil, "NetworkPolicy": s.Policy == nil,
	} {
		if missing {
			problems = append(problems, "no "+kind)
		}
	}
	return s, problems
}

// containerArgs splits --name=value and --name (a bool) args.
func containerArgs(args []string) (map[string]string, []string) {
	out := map[string]string{}
	var problems []string
	for _, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || name == "" {
			problems = append(problems, fmt.Sprintf("arg %q is not --flag or --flag=value", a))
			continue
		}
		if _, dup := out[name]; dup {
			problems = append(problems, "--"+name+" is passed twice")
		}
		if !hasValue {
			value = "true"
		}
		out[name] = value
	}
	return out, problems
}

// serveProblems checks the invariants of one build of config/serve (mode
// "pvc" for the base, "s3" for the overlay) against cache-serve's flags;
// it returns what is wrong, one line each.
func serveProblems(objs []Object, flags map[string]bool, mode string) []string {
	s, problems := collect(objs)
	if s.Deployment == nil {
		return problems
	}
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	d := s.Deployment
	pod := d.Spec.Template.Spec
	podLabels := labels.Set(d.Spec.Template.Labels)
	if sel := d.Spec.Selector; sel == nil || !labels.SelectorFromSet(sel.MatchLabels).Matches(podLabels) || len(sel.MatchExpressions) > 0 {
		bad("the Deployment's selector %v does not select its pods %v", sel, podLabels)
	}
	if len(pod.Containers) != 1 {
		bad("%d containers, want 1", len(pod.Containers))
		return problems
	}
	c := pod.Containers[0]
	if c.Image != "ko://github.com/tekton-cache/tekton-cache/cmd/cache-serve" {
		bad("image %q, want ko://github.com/tekton-cache/tekton-cache/cmd/cache-serve (the release pins it)", c.Image)
	}
	if len(c.Command) > 0 {
		bad("command %q: the image's entrypoint is cache-serve", c.Command)
	}

	// Every arg is a flag cache-serve has, a value where it takes one.
	args, argProblems := containerArgs(c.Args)
	problems = append(problems, argProblems...)
	for name, value := range args {
		takesValue, ok := flags[name]
		switch {
		case !ok:
			bad("--%s: cache-serve has no such flag", name)
		case takesValue && !strings.Contains(argOf(c.Args, name), "="):
			bad("--%s takes a value: write --%s=VALUE", name, name)
		case !takesValue && value != "true":
			bad("--%s is a bool: pass it alone", name)
		}
	}
	for _, need := range []string{"store", "listen", "tokens-file", "token-review", "token-audience", "shutdown-timeout", "ttl"} {
		if _, ok := args[need]; !ok {
			bad("no --%s", need)
		}
	}
	if args["token-audience"] != "tekton-cache" {
		bad("--token-audience=%q, want tekton-cache (the audience examples/serve projects)", args["token-audience"])
	}
	for _, open := range []string{"allow-unauthenticated-reads", "allow-unauthenticated-writes", "insecure"} {
		if _, ok := args[open]; ok {
			bad("--%s in a shipped Deployment", open)
		}
	}

	// The port: --listen, the container port "http", the Service, the
	// probes, the NetworkPolicy and the scrape annotation agree.
	_, port, _ := strings.Cut(args["listen"], ":")
	listenPort, err := strconv.Atoi(port)
	if err != nil || !strings.HasPrefix(args["listen"], ":") {
		bad("--listen=%q: want :PORT on every interface (the kubelet probes the pod IP)", args["listen"])
	}
	var httpPort *corev1.ContainerPort
	for i := range c.Ports {
		if c.Ports[i].Name == "http" {
			httpPort = &c.Ports[i]
		}
	}
	if httpPort == nil || int(httpPort.ContainerPort) != listenPort {
		bad("no container port \"http\" at --listen's port %d", listenPort)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			bad("no %s probe over HTTP", name)
			continue
		}
		if p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port != intstr.FromString("http") {
			bad("%s probe GET %s on port %s, want /healthz on port http", name, p.HTTPGet.Path, p.HTTPGet.Port.String())
		}
		if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
			bad("%s probe over %s, but cache-serve serves plain HTTP here", name, p.HTTPGet.Scheme)
		}
	}
	svc := s.Service
	if svc != nil {
		if svc.Name != "tekton-cache" {
			bad("Service %q, want tekton-cache (examples/serve's URL)", svc.Name)
		}
		if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			bad("the Service's selector %v does not select the pods", svc.Spec.Selector)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort != intstr.FromString("http") {
			bad("Service ports %v, want 8080 to the container port http", svc.Spec.Ports)
		}
	}
	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" || ann["prometheus.io/port"] != strconv.Itoa(listenPort) {
		bad("scrape annotations %v, want prometheus.io/scrape true, path /metrics, port %d", ann, listenPort)
	}
	if np := s.Policy; np != nil {
		if !labels.SelectorFromSet(np.Spec.PodSelector.MatchLabels).Matches(podLabels) || len(np.Spec.PodSelector.MatchLabels) == 0 {
			bad("the NetworkPolicy does not select the server's pods")
		}
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Spec.Ingress) != 1 {
			bad("the NetworkPolicy: want one Ingress rule")
		} else {
			rule := np.Spec.Ingress[0]
			if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || *rule.Ports[0].Port != intstr.FromString("http") {
				bad("the NetworkPolicy opens ports %v, want only http", rule.Ports)
			}
			sameNamespace := false
			for _, peer := range rule.From {
				switch {
				case peer.IPBlock != nil:
					bad("the NetworkPolicy lets in an IP block")
				case peer.NamespaceSelector == nil && peer.PodSelector != nil && len(peer.PodSelector.MatchLabels) == 0 && len(peer.PodSelector.MatchExpressions) == 0:
					sameNamespace = true
				case peer.PodSelector == nil || len(peer.PodSelector.MatchLabels) == 0:
					bad("the NetworkPolicy lets in every pod of some namespaces: %v", peer)
				}
			}
			if !sameNamespace {
				bad("the NetworkPolicy does not let in this namespace's pods")
			}
		}
	}

	// Hardening and resources.
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		bad("the pod does not run as a non-root user")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		bad("no seccomp profile RuntimeDefault")
	}
	csc := c.SecurityContext
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		bad("the root filesystem is writable")
	}
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		bad("privilege escalation is allowed")
	}
	if csc == nil || csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
		bad("capabilities: want drop [ALL] and none added")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			bad("%s: request %s and limit %s: want both, request <= limit", r, req.String(), lim.String())
		}
	}
	if shutdown, err := time.ParseDuration(args["shutdown-timeout"]); err != nil {
		bad("--shutdown-timeout=%q: %v", args["shutdown-timeout"], err)
	} else if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second < shutdown+10*time.Second {
		bad("terminationGracePeriodSeconds %v: want at least --shutdown-timeout (%s) + 10s, or the kubelet kills uploads in flight", g, shutdown)
	}

	// Volumes: every mount has its volume, every volume is mounted, and what
	// they name is in the set.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	mounted := map[string]string{} // volume -> mount path
	for _, m := range c.VolumeMounts {
		if _, ok := vols[m.Name]; !ok {
			bad("volumeMount %s names no volume", m.Name)
		}
		mounted[m.Name] = m.MountPath
	}
	for name := range vols {
		if _, ok := mounted[name]; !ok {
			bad("volume %s is not mounted", name)
		}
	}
	claims := map[string]bool{}
	for _, v := range vols {
		switch {
		case v.PersistentVolumeClaim != nil:
			claims[v.PersistentVolumeClaim.ClaimName] = true
		case v.Secret != nil:
			if s.Secret == nil || v.Secret.SecretName != s.Secret.Name {
				bad("volume %s mounts the Secret %q, which is not in config/serve", v.Name, v.Secret.SecretName)
			}
		}
	}
	for _, pvc := range s.PVCs {
		if !claims[pvc.Name] {
			bad("the PVC %s is not mounted", pvc.Name)
		}
		delete(claims, pvc.Name)
	}
	for name := range claims {
		bad("a volume claims %s, which is not in the set", name)
	}
	// --tokens-file is a key of the Secret, in the directory it is mounted at.
	tokensDir, tokensKey := filepath.Split(args["tokens-file"])
	if s.Secret != nil {
		var secretVol string
		for name, v := range vols {
			if v.Secret != nil && v.Secret.SecretName == s.Secret.Name {
				secretVol = name
			}
		}
		if filepath.Clean(tokensDir) != mounted[secretVol] {
			bad("--tokens-file=%s is not in the Secret's mount %s", args["tokens-file"], mounted[secretVol])
		}
		if _, ok := s.Secret.StringData[tokensKey]; !ok {
			bad("the Secret %s has no key %s (--tokens-file)", s.Secret.Name, tokensKey)
		}
	}
	if pod.ServiceAccountName == "" || s.SA == nil || pod.ServiceAccountName != s.SA.Name {
		bad("the pod runs as ServiceAccount %q, not the one in config/serve", pod.ServiceAccountName)
	}
	if pod.AutomountServiceAccountToken != nil && !*pod.AutomountServiceAccountToken {
		bad("the pod has no ServiceAccount token, so it cannot call TokenReview")
	}
	if b := s.Binding; b != nil && s.SA != nil {
		if b.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"}) {
			bad("the ClusterRoleBinding binds %v, want the ClusterRole system:auth-delegator", b.RoleRef)
		}
		if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != s.SA.Name || b.Subjects[0].Namespace != d.Namespace || d.Namespace == "" {
			bad("the ClusterRoleBinding's subjects %v: want the ServiceAccount %s in the Deployment's namespace %q", b.Subjects, s.SA.Name, d.Namespace)
		}
	}

	// The store.
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	switch mode {
	case "pvc":
		if replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			bad("%d replicas, strategy %q: a ReadWriteOnce volume wants 1 replica and Recreate", replicas, d.Spec.Strategy.Type)
		}
		if len(s.PVCs) != 1 {
			bad("%d PVCs, want 1", len(s.PVCs))
			break
		}
		pvc := s.PVCs[0]
		if mounted[volumeOfClaim(vols, pvc.Name)] != "/data" || args["store"] != "file:///data" {
			bad("--store=%s and the PVC mounted at %q: want file:///data on /data", args["store"], mounted[volumeOfClaim(vols, pvc.Name)])
		}
		// cache-serve's sizes end in iB (16GiB), Kubernetes' in i (16Gi).
		maxSize, err := resource.ParseQuantity(strings.TrimSuffix(args["max-size"], "B"))
		if err != nil || !strings.HasSuffix(args["max-size"], "iB") || maxSize.Sign() <= 0 {
			bad("--max-size=%q: want a size in KiB, MiB, GiB or TiB below the PVC's", args["max-size"])
		} else if size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; size.Cmp(maxSize) <= 0 {
			bad("--max-size=%s is not below the PVC's %s: the volume fills before eviction", args["max-size"], size.String())
		}
	case "s3":
		if replicas != 3 {
			bad("%d replicas, want 3", replicas)
		}
		if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
			bad("strategy %q, want RollingUpdate", d.Spec.Strategy.Type)
		}
		if len(s.PVCs) > 0 || len(claims) > 0 {
			bad("a PVC in the stateless mode")
		}
		if _, ok := mounted["data"]; ok {
			bad("a data volume in the stateless mode")
		}
		if !strings.HasPrefix(args["store"], "s3://") {
			bad("--store=%s, want s3://", args["store"])
		}
		env := map[string]*corev1.EnvVarSource{}
		for _, e := range c.Env {
			env[e.Name] = e.ValueFrom
		}
		for _, name := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
			if v := env[name]; v == nil || v.SecretKeyRef == nil || v.SecretKeyRef.Key != name {
				bad("%s does not come from a Secret's key %s", name, name)
			}
		}
		if s.PDB == nil {
			bad("no PodDisruptionBudget")
		} else if sel := s.PDB.Spec.Selector; sel == nil || !labels.SelectorFromSet(sel.MatchLabels).Matches(podLabels) {
			bad("the PodDisruptionBudget does not select the pods")
		} else if m := s.PDB.Spec.MaxUnavailable; m == nil || m.IntValue() != 1 {
			bad("PodDisruptionBudget maxUnavailable %v, want 1", m)
		}
		if len(pod.TopologySpreadConstraints) == 0 {
			bad("no topology spread")
		}
		for _, tsc := range pod.TopologySpreadConstraints {
			if tsc.LabelSelector == nil || !labels.SelectorFromSet(tsc.LabelSelector.MatchLabels).Matches(podLabels) {
				bad("a topology spread constraint (%s) does not select the pods", tsc.TopologyKey)
			}
		}
	}
	return problems
}

// argOf returns the arg that sets --name.
func argOf(args []string, name string) string {
	for _, a := range args {
		if a == "--"+name || strings.HasPrefix(a, "--"+name+"=") {
			return a
		}
	}
	return ""
}

func volumeOfClaim(vols map[string]corev1.Volume, claim string) string {
	for name, v := range vols {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
			return name
		}
	}
	return ""
}

// tokensFile returns the tokens file the Secret carries.
func tokensFile(t testing.TB, objs []Object) []byte {
	t.Helper()
	s, _ := collect(objs)
	if s.Secret == nil || s.Deployment == nil {
		t.Fatal("no Secret or Deployment")
	}
	args, _ := containerArgs(s.Deployment.Spec.Template.Spec.Containers[0].Args)
	data, ok := s.Secret.StringData[filepath.Base(args["tokens-file"])]
	if !ok {
		t.Fatalf("the Secret has no %s", filepath.Base(args["tokens-file"]))
	}
	return []byte(data)
}

// serviceAccountEntries returns the NAMESPACE/NAME entries of the tokens
// file's serviceAccounts list.
func serviceAccountEntries(t testing.TB, data []byte) []string {
	t.Helper()
	var f struct {
		ServiceAccounts []struct {
			Name string `json:"name"`
		} `json:"serviceAccounts"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range f.ServiceAccounts {
		out = append(out, e.Name)
	}
	return out
}

// configFiles lists every YAML file under config/serve.
func configFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(repoRoot(t), "config", "serve"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestServeManifests builds config/serve and its s3 overlay with
// kustomize, decodes every object strictly into the Kubernetes API types,
// and checks the invariants of serveProblems against cache-serve's real
// flags; and that the tokens file in the Secret is one cache-serve loads,
// naming the ServiceAccounts examples/serve runs as.
func TestServeManifests(t *testing.T) {
	flags := serveFlags(t)
	root := repoRoot(t)
	base := kustomizeBuild(t, filepath.Join(root, "config", "serve"))
	for _, p := range serveProblems(base, flags, "pvc") {
		t.Errorf("config/serve: %s", p)
	}
	s3 := kustomizeBuild(t, filepath.Join(root, "config", "serve", "overlays", "s3"))
	for _, p := range serveProblems(s3, flags, "s3") {
		t.Errorf("config/serve/overlays/s3: %s", p)
	}
	t.Logf("config/serve: %d objects; overlays/s3: %d", len(base), len(s3))

	// Every base file decodes on its own too (`kubectl apply -f`), and every
	// file is used: a resource or a patch of a kustomization.
	used := map[string]bool{}
	for _, f := range configFiles(t) {
		if filepath.Base(f) != "kustomization.yaml" {
			continue
		}
		var k struct {
			Resources []string `json:"resources"`
			Patches   []struct {
				Path string `json:"path"`
			} `json:"patches"`
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, r := range k.Resources {
			p := filepath.Join(filepath.Dir(f), r)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				used[p] = true
				if _, err := LoadFile(p); err != nil {
					t.Errorf("%v", err)
				}
			}
		}
		for _, p := range k.Patches {
			used[filepath.Join(filepath.Dir(f), p.Path)] = true
		}
	}
	for _, f := range configFiles(t) {
		if filepath.Base(f) != "kustomization.yaml" && !used[f] {
			t.Errorf("%s is in no kustomization", f)
		}
	}

	// The tokens file names the ServiceAccounts the example runs as, in the
	// Deployment's namespace (TestServeDeploymentRuns loads it).
	set, _ := collect(base)
	entries := serviceAccountEntries(t, tokensFile(t, base))
	for _, f := range []string{"examples/serve/pipelinerun-go-serve.yaml", "examples/serve/pipelinerun-go-serve-pr.yaml"} {
		pr := loadObject[*v1.PipelineRun](t, f)
		sa := pr.Spec.TaskRunTemplate.ServiceAccountName
		if !slices.Contains(entries, set.Deployment.Namespace+"/"+sa) {
			t.Errorf("%s runs as %q, which the tokens file's serviceAccounts %v do not name in namespace %s", f, sa, entries, set.Deployment.Namespace)
		}
		var token *corev1.ServiceAccountTokenProjection
		for _, w := range pr.Spec.Workspaces {
			if w.Name == "cache-token" && w.Projected != nil && len(w.Projected.Sources) == 1 {
				token = w.Projected.Sources[0].ServiceAccountToken
			}
		}
		if token == nil || token.Audience != "tekton-cache" || token.Path != "token" || token.ExpirationSeconds == nil || *token.ExpirationSeconds != 3600 {
			t.Errorf("%s: the cache-token workspace is not a projected token with audience tekton-cache, path token, 3600 s: %+v", f, token)
		}
	}
}

// TestServeNamespaceFollows builds config/serve under another namespace
// (what a user's overlay does) and checks that everything, the
// ClusterRoleBinding's subject included, moves to it.
func TestServeNamespaceFollows(t *testing.T) {
	dir := t.TempDir()
	// kustomize takes no absolute path of a base: a relative one.
	rel, err := filepath.Rel(dir, filepath.Join(repoRoot(t), "config", "serve"))
	if err != nil {
		t.Fatal(err)
	}
	k := "resources:\n  - " + rel + "\nnamespace: builds\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := kustomizeBuild(t, dir)
	s, _ := collect(objs)
	if s.Deployment == nil || s.Deployment.Namespace != "builds" {
		t.Fatalf("the Deployment is not in namespace builds")
	}
	if s.Binding == nil || len(s.Binding.Subjects) != 1 || s.Binding.Subjects[0].Namespace != "builds" {
		t.Errorf("the ClusterRoleBinding's subject did not follow the namespace: %+v", s.Binding)
	}
	for _, p := range serveProblems(objs, serveFlags(t), "pvc") {
		t.Errorf("namespace builds: %s", p)
	}
}

// TestServeProblemsBite proves serveProblems catches what it is for: each
// broken copy of the base gets the message it should.
func TestServeProblemsBite(t *testing.T) {
	flags := serveFlags(t)
	for _, tc := range []struct {
		name   string
		mutate func(*serveSet)
		want   string
	}{
		{"unknown flag", func(s *serveSet) {
			c := &s.Deployment.Spec.Template.Spec.Containers[0]
			c.Args = append(c.Args, "--tokens=/x")
		}, "--tokens: cache-serve has no such flag"},
		{"bool with a value", func(s *serveSet) {
			c := &s.Deployment.Spec.Template.Spec.Containers[0]
			c.Args = append(c.Args, "--insecure=false")
		}, "--insecure is a bool"},
		{"value flag alone", func(s *serveSet) {
			c := &s.Deployment.Spec.Template.Spec.Containers[0]
			c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--ttl") })
			c.Args = append(c.Args, "--ttl")
		}, "--ttl takes a value"},
		{"probe path", func(s *serveSet) { s.Deployment.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Path = "/" }, "readiness probe GET /"},
		{"missing volume", func(s *serveSet) {
			p := &s.Deployment.Spec.Template.Spec
			p.Volumes = slices.DeleteFunc(p.Volumes, func(v corev1.Volume) bool { return v.Name == "tokens" })
		}, "volumeMount tokens names no volume"},
		{"auth delegator", func(s *serveSet) { s.Binding.RoleRef.Name = "cluster-admin" }, "want the ClusterRole system:auth-delegator"},
		{"grace period", func(s *serveSet) { g := int64(30); s.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds = &g }, "terminationGracePeriodSeconds"},
		{"max size", func(s *serveSet) {
			s.PVCs[0].Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("10Gi")
		}, "is not below the PVC's 10Gi"},
		{"writable root", func(s *serveSet) {
			f := false
			s.Deployment.Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = &f
		}, "root filesystem is writable"},
		{"open policy", func(s *serveSet) { s.Policy.Spec.Ingress[0].From[1].PodSelector = nil }, "lets in every pod of some namespaces"},
		{"tokens key", func(s *serveSet) { s.Secret.StringData = map[string]string{"other.yaml": ""} }, "has no key tokens.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := kustomizeBuild(t, filepath.Join(repoRoot(t), "config", "serve"))
			s, _ := collect(objs)
			tc.mutate(&s)
			got := serveProblems(objs, flags, "pvc")
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("got %q, want a problem containing %q", got, tc.want)
			}
		})
	}
}
