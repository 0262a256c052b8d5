#!/usr/bin/env bash
# Installs what the Tekton surfaces need into $(go env GOPATH)/bin, each only
# when it is missing (on PATH or in that directory):
#   ko         builds and pushes the `cache` image without Docker (make image,
#              the release YAML, and test/tekton's image test)
#   kustomize  renders tekton/kustomization.yaml for the release YAML
# Cold `go install` on 2 cores: ko ~2 min, kustomize ~1 min; warm, seconds.
# kustomize v5.8.3 and later need Go 1.27: keep v5.8.0 until the project moves.
set -euo pipefail

KO_VERSION=v0.19.1
KUSTOMIZE_VERSION=v5.8.0

# shellcheck source=hack/lib-install.sh
. "$(dirname "$0")/lib-install.sh"

install_tool ko "github.com/google/ko@${KO_VERSION}"
install_tool kustomize "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
