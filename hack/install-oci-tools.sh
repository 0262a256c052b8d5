#!/usr/bin/env bash
# Installs what the oci:// store tests need into $(go env GOPATH)/bin, each
# only when it is missing (on PATH or in that directory):
#   registry  distribution v3, started by internal/store/oci tests (required)
#   crane     go-containerregistry's CLI, for looking at entries by hand (optional;
#             set OCI_TOOLS_CRANE=0 to skip it)
# A cold `go install` of registry takes ~7 min on 2 cores; warm, seconds.
set -euo pipefail

REGISTRY_VERSION=v3.1.2
CRANE_VERSION=v0.22.1

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

install_tool registry "github.com/distribution/distribution/v3/cmd/registry@${REGISTRY_VERSION}"
if [ "${OCI_TOOLS_CRANE:-1}" != 0 ]; then
  install_tool crane "github.com/google/go-containerregistry/cmd/crane@${CRANE_VERSION}" ||
    echo "warning: crane not installed (optional)" >&2
fi
