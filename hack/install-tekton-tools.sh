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

gobin="$(go env GOBIN)"
if [ -z "$gobin" ]; then
  gobin="$(go env GOPATH | cut -d: -f1)/bin"
fi

have() { command -v "$1" >/dev/null 2>&1 || test -x "$gobin/$1"; }

install_tool() { # install_tool NAME MODULE@VERSION
  if have "$1"; then
    return 0
  fi
  echo "installing $1 ($2) into $gobin" >&2
  GOBIN="$gobin" go install "$2"
}

install_tool ko "github.com/google/ko@${KO_VERSION}"
install_tool kustomize "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
