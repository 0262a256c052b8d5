// Command cache-resolver runs the Tekton "cache" resolver (docs/RESOLVER.md)
// as a controller on Tekton's remote-resolution framework.
package main

import (
	"github.com/tektoncd/pipeline/pkg/apis/resolution/v1beta1"
	"github.com/tektoncd/pipeline/pkg/remoteresolution/resolver/framework"
	filteredinformerfactory "knative.dev/pkg/client/injection/kube/informers/factory/filtered"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/signals"

	"github.com/tekton-cache/tekton-cache/resolver"
)

// Version is set at build time (-ldflags -X main.Version=...).
var Version = ""

func main() {
	ctx := filteredinformerfactory.WithSelectors(signals.NewContext(), v1beta1.ManagedByLabelKey)
	sharedmain.MainWithContext(ctx, "controller", framework.NewController(ctx, &resolver.Resolver{Version: Version}))
}
