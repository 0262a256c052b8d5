package tekton

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/tekton-cache/tekton-cache/resolver"
)

// TestResolverManifests builds config/resolver with kustomize's library
// and checks it against the resolver: the Deployment runs the resolver's
// command (a ko:// path that exists) as the ServiceAccount the bindings
// name, with the env the framework reads; the ConfigMap is the one
// GetConfigName names, with every key the resolver reads; the RBAC grants
// what the framework and Resolve call, and no secrets.
func TestResolverManifests(t *testing.T) {
	const ns = "tekton-pipelines-resolvers"
	objs := kustomizeBuild(t, filepath.Join(repoRoot(t), "config", "resolver"))
	var (
		dep      *appsv1.Deployment
		sa       *corev1.ServiceAccount
		cm       *corev1.ConfigMap
		cr       *rbacv1.ClusterRole
		role     *rbacv1.Role
		bindings []rbacv1.Subject
		roleRefs []string
	)
	for _, o := range objs {
		switch x := o.Obj.(type) {
		case *appsv1.Deployment:
			dep = x
		case *corev1.ServiceAccount:
			sa = x
		case *corev1.ConfigMap:
			cm = x
		case *rbacv1.ClusterRole:
			cr = x
		case *rbacv1.Role:
			role = x
		case *rbacv1.ClusterRoleBinding:
			bindings = append(bindings, x.Subjects...)
			roleRefs = append(roleRefs, x.RoleRef.Kind+"/"+x.RoleRef.Name)
		case *rbacv1.RoleBinding:
			bindings = append(bindings, x.Subjects...)
			roleRefs = append(roleRefs, x.RoleRef.Kind+"/"+x.RoleRef.Name)
		default:
			t.Errorf("unexpected %T", o.Obj)
		}
	}
	if dep == nil || sa == nil || cm == nil || cr == nil || role == nil || len(bindings) != 2 {
		t.Fatalf("want a Deployment, ServiceAccount, ConfigMap, ClusterRole, Role and two bindings; got %d objects", len(objs))
	}
	for _, o := range []interface{ GetNamespace() string }{dep, sa, cm, role} {
		if o.GetNamespace() != ns {
			t.Errorf("%T in namespace %q, want %s", o, o.GetNamespace(), ns)
		}
	}
	pod := dep.Spec.Template.Spec
	if pod.ServiceAccountName != sa.Name {
		t.Errorf("Deployment runs as %q, the ServiceAccount is %q", pod.ServiceAccountName, sa.Name)
	}
	for _, s := range bindings {
		if s.Kind != "ServiceAccount" || s.Name != sa.Name || s.Namespace != ns {
			t.Errorf("binding subject %+v, want the ServiceAccount %s/%s", s, ns, sa.Name)
		}
	}
	if !slices.Contains(roleRefs, "ClusterRole/"+cr.Name) || !slices.Contains(roleRefs, "Role/"+role.Name) {
		t.Errorf("bindings refer to %v", roleRefs)
	}
	c := pod.Containers[0]
	const ko = "ko://github.com/tekton-cache/tekton-cache/"
	if !strings.HasPrefix(c.Image, ko) {
		t.Fatalf("image %q is not a ko:// path of this repository", c.Image)
	}
	if fi, err := os.Stat(filepath.Join(repoRoot(t), strings.TrimPrefix(c.Image, ko), "main.go")); err != nil || fi.IsDir() {
		t.Errorf("image %s: no main.go there: %v", c.Image, err)
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	for _, want := range []string{"SYSTEM_NAMESPACE", "CONFIG_LOGGING_NAME", "CONFIG_OBSERVABILITY_NAME", "METRICS_DOMAIN"} {
		if !env[want] {
			t.Errorf("the container has no %s", want)
		}
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("the container should run as non-root on a read-only root filesystem")
	}
	if cm.Name != (&resolver.Resolver{}).GetConfigName(nil) {
		t.Errorf("ConfigMap %q, the resolver reads %q", cm.Name, (&resolver.Resolver{}).GetConfigName(nil))
	}
	for _, k := range []string{resolver.ConfigDefaultImage, resolver.ConfigAllowedTargets, resolver.ConfigAllowImage} {
		if _, ok := cm.Data[k]; !ok {
			t.Errorf("ConfigMap has no %s", k)
		}
	}
	allows := func(rules []rbacv1.PolicyRule, group, res, verb string) bool {
		for _, r := range rules {
			if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, res) && slices.Contains(r.Verbs, verb) {
				return true
			}
		}
		return false
	}
	for _, want := range [][3]string{
		{"resolution.tekton.dev", "resolutionrequests", "watch"},
		{"resolution.tekton.dev", "resolutionrequests", "update"},
		{"resolution.tekton.dev", "resolutionrequests/status", "patch"},
		{"tekton.dev", "pipelines", "get"},
		{"tekton.dev", "tasks", "get"},
	} {
		if !allows(cr.Rules, want[0], want[1], want[2]) {
			t.Errorf("the ClusterRole does not allow %s on %s.%s", want[2], want[1], want[0])
		}
	}
	for _, want := range [][3]string{{"", "configmaps", "watch"}, {"coordination.k8s.io", "leases", "update"}} {
		if !allows(role.Rules, want[0], want[1], want[2]) {
			t.Errorf("the Role does not allow %s on %s", want[2], want[1])
		}
	}
	for _, r := range append(cr.Rules, role.Rules...) {
		if slices.Contains(r.Resources, "secrets") || slices.Contains(r.Verbs, "*") {
			t.Errorf("rule %+v: the resolver needs no secrets and no wildcard", r)
		}
	}
}
