// Package resolver is the Tekton "cache" resolver: a pipelineRef with
// `resolver: cache` names a Pipeline in the request's namespace, and the
// resolver returns it with cache steps added by internal/inject, the same
// rewrite as `cache inject`. It lives in its own module so that Tekton,
// Knative and Kubernetes stay out of the step image's `cache` binary.
package resolver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/apis/resolution/v1beta1"
	"github.com/tektoncd/pipeline/pkg/client/clientset/versioned"
	pipelineclient "github.com/tektoncd/pipeline/pkg/client/injection/client"
	"github.com/tektoncd/pipeline/pkg/remoteresolution/resolver/framework"
	"github.com/tektoncd/pipeline/pkg/resolution/common"
	resolutionframework "github.com/tektoncd/pipeline/pkg/resolution/resolver/framework"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/tekton-cache/tekton-cache/internal/inject"
)

// The resolver's name, its selector's value and its ConfigMap.
const (
	Name       = "Cache"
	LabelValue = "cache"
	ConfigName = "cache-resolver-config"
)

// Params of a request. None is named "cache", which the framework reserves
// for its own cache of resolved resources (always|never|auto) on every
// resolver.
const (
	ParamPipeline    = "pipelineref"  // the Pipeline's name, in the request's namespace
	ParamWorkspaces  = "workspaces"   // array, or a comma list
	ParamFiles       = "files"        // array, or a comma list
	ParamSource      = "source"       // the workspace with the lock files
	ParamTarget      = "target"       // store URL template: {{workspace}}, {{hash}}
	ParamRestoreKeys = "restore-keys" // array, or a comma list
	ParamImage       = "image"        // default: the ConfigMap's default-image
	ParamMode        = "mode"         // inline (default) or stepaction
	ParamInsecure    = "insecure"     // "true" for a plain-HTTP store
)

var knownParams = []string{ParamPipeline, ParamWorkspaces, ParamFiles, ParamSource, ParamTarget, ParamRestoreKeys, ParamImage, ParamMode, ParamInsecure}

// Keys of the ConfigMap.
const (
	// ConfigDefaultImage is the cache image of inlined steps when a request
	// names none.
	ConfigDefaultImage = "default-image"
	// ConfigAllowedTargets are the store URL prefixes a target must start
	// with (a comma list, or one per line); empty: any.
	ConfigAllowedTargets = "allowed-targets"
	// ConfigAllowImage is "false" to refuse a request's own image param.
	ConfigAllowImage = "allow-image-param"
)

// Resolver implements framework.Resolver, resolutionframework.ConfigWatcher
// and the framework cache's ImmutabilityChecker.
type Resolver struct {
	// Client reads Pipelines and Tasks; Initialize sets it from the
	// controller's context when nil.
	Client versioned.Interface
	// Version goes into the output's rewritten-by annotation.
	Version string
}

var (
	_ framework.Resolver                = (*Resolver)(nil)
	_ resolutionframework.ConfigWatcher = (*Resolver)(nil)
)

// Initialize takes the Tekton client from the controller's context.
func (r *Resolver) Initialize(ctx context.Context) error {
	if r.Client == nil {
		r.Client = pipelineclient.Get(ctx)
	}
	return nil
}

// GetName names the resolver's work queue.
func (r *Resolver) GetName(context.Context) string { return Name }

// GetSelector matches the requests of `resolver: cache`.
func (r *Resolver) GetSelector(context.Context) map[string]string {
	return map[string]string{common.LabelKeyResolverType: LabelValue}
}

// GetConfigName is the ConfigMap with the defaults, in the resolvers'
// namespace.
func (r *Resolver) GetConfigName(context.Context) string { return ConfigName }

// IsImmutable is false: the output depends on the Pipeline and Tasks in
// the cluster, which change under the same name.
func (r *Resolver) IsImmutable([]v1.Param) bool { return false }

// Validate checks the params without reading the cluster.
func (r *Resolver) Validate(ctx context.Context, req *v1beta1.ResolutionRequestSpec) error {
	_, _, err := r.options(ctx, req.Params)
	return err
}

// Resolve reads the Pipeline (and the Tasks its taskRefs name) from the
// request's namespace, and returns it rewritten.
func (r *Resolver) Resolve(ctx context.Context, req *v1beta1.ResolutionRequestSpec) (resolutionframework.ResolvedResource, error) {
	o, name, err := r.options(ctx, req.Params)
	if err != nil {
		return nil, err
	}
	ns := common.RequestNamespace(ctx)
	if ns == "" {
		return nil, errors.New("the request has no namespace")
	}
	if r.Client == nil {
		return nil, errors.New("the resolver has no Tekton client")
	}
	p, err := r.Client.TektonV1().Pipelines(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("no Pipeline %s in namespace %s (the cache resolver reads the request's namespace only)", name, ns)
		}
		return nil, fmt.Errorf("reading Pipeline %s/%s: %w", ns, name, err)
	}
	src, err := yaml.Marshal(&v1.Pipeline{
		TypeMeta:   metav1.TypeMeta{APIVersion: "tekton.dev/v1", Kind: "Pipeline"},
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Labels: p.Labels, Annotations: withoutLastApplied(p.Annotations)},
		Spec:       p.Spec,
	})
	if err != nil {
		return nil, err
	}
	tasks := func(task string) ([]byte, error) {
		t, err := r.Client.TektonV1().Tasks(ns).Get(ctx, task, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("refers to Task %s, which namespace %s does not have", task, ns)
		}
		if err != nil {
			return nil, fmt.Errorf("reading Task %s/%s: %w", ns, task, err)
		}
		return yaml.Marshal(&v1.Task{
			TypeMeta:   metav1.TypeMeta{APIVersion: "tekton.dev/v1", Kind: "Task"},
			ObjectMeta: metav1.ObjectMeta{Name: t.Name},
			Spec:       t.Spec,
		})
	}
	o.From = fmt.Sprintf("Pipeline %s/%s", ns, name)
	out, rep, err := inject.RewriteYAML(src, o, tasks)
	if err != nil {
		return nil, err
	}
	res := &resource{
		data: out,
		annotations: map[string]string{
			inject.AnnotationFrom:  o.From,
			inject.AnnotationTasks: strings.Join(rep.Tasks, ","),
		},
		source: &v1.RefSource{
			URI:    fmt.Sprintf("/apis/tekton.dev/v1/namespaces/%s/pipeline/%s@%s", ns, name, p.UID),
			Digest: map[string]string{"sha256": sha256Hex(out)},
		},
	}
	if w := rep.Warnings(); len(w) > 0 {
		res.annotations[inject.AnnotationWarning] = strings.Join(w, "; ")
	}
	return res, nil
}

// options turns the params and the ConfigMap into the rewrite's options
// and the Pipeline's name.
func (r *Resolver) options(ctx context.Context, params []v1.Param) (inject.Options, string, error) {
	conf := resolutionframework.GetResolverConfigFromContext(ctx)
	var o inject.Options
	var name string
	seen := map[string]bool{}
	for _, p := range params {
		if seen[p.Name] {
			return o, "", fmt.Errorf("param %s is given twice", p.Name)
		}
		seen[p.Name] = true
		list := p.Value.ArrayVal
		if p.Value.Type != v1.ParamTypeArray {
			list = splitList(p.Value.StringVal)
		}
		isString := p.Value.Type == v1.ParamTypeString || p.Value.Type == ""
		lists := map[string]*[]string{ParamWorkspaces: &o.Workspaces, ParamFiles: &o.Files, ParamRestoreKeys: &o.RestoreKeys}
		strs := map[string]*string{ParamPipeline: &name, ParamSource: &o.Source, ParamTarget: &o.Target, ParamImage: &o.Image, ParamMode: &o.Mode}
		switch {
		case p.Name == "cache":
			// The framework's own (always|never|auto), checked by it.
		case lists[p.Name] != nil:
			*lists[p.Name] = list
		case !slices.Contains(knownParams, p.Name):
			return o, "", fmt.Errorf("unknown param %q: the cache resolver takes %s", p.Name, strings.Join(knownParams, ", "))
		case !isString:
			return o, "", fmt.Errorf("param %s must be a string", p.Name)
		case strs[p.Name] != nil:
			*strs[p.Name] = strings.TrimSpace(p.Value.StringVal)
		case p.Name == ParamInsecure:
			b, err := strconv.ParseBool(strings.TrimSpace(p.Value.StringVal))
			if err != nil {
				return o, "", fmt.Errorf("param insecure %q: use true or false", p.Value.StringVal)
			}
			o.Insecure = b
		}
	}
	if name == "" {
		return o, "", fmt.Errorf("no %s param: name the Pipeline, in the PipelineRun's namespace", ParamPipeline)
	}
	if o.Image != "" && conf[ConfigAllowImage] == "false" {
		return o, "", fmt.Errorf("param image is not allowed here (%s: %s=false): the cluster's default image is used", ConfigName, ConfigAllowImage)
	}
	if o.Image == "" {
		o.Image = conf[ConfigDefaultImage]
	}
	if err := o.Validate(); err != nil {
		return o, "", err
	}
	if allowed := splitList(conf[ConfigAllowedTargets]); len(allowed) > 0 && !slices.ContainsFunc(allowed, func(a string) bool { return strings.HasPrefix(o.Target, a) }) {
		return o, "", fmt.Errorf("target %q is not under an allowed store (%s: %s=%s)", o.Target, ConfigName, ConfigAllowedTargets, strings.Join(allowed, ","))
	}
	o.By = "cache resolver " + r.version()
	return o, name, nil
}

func (r *Resolver) version() string {
	if r.Version == "" {
		return "dev"
	}
	return r.Version
}

// splitList splits a comma list or one item per line, blanks dropped.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// withoutLastApplied drops kubectl's copy of the object, which would carry
// the original Pipeline into the output.
func withoutLastApplied(a map[string]string) map[string]string {
	if _, ok := a["kubectl.kubernetes.io/last-applied-configuration"]; !ok {
		return a
	}
	out := map[string]string{}
	for k, v := range a {
		if k != "kubectl.kubernetes.io/last-applied-configuration" {
			out[k] = v
		}
	}
	return out
}

// resource is a resolved Pipeline.
type resource struct {
	data        []byte
	annotations map[string]string
	source      *v1.RefSource
}

func (r *resource) Data() []byte                   { return r.data }
func (r *resource) Annotations() map[string]string { return r.annotations }
func (r *resource) RefSource() *v1.RefSource       { return r.source }

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
