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

# shellcheck source=hack/lib-install.sh
. "$(dirname "$0")/lib-install.sh"

install_tool registry "github.com/distribution/distribution/v3/cmd/registry@${REGISTRY_VERSION}"
if [ "${OCI_TOOLS_CRANE:-1}" != 0 ]; then
  install_tool crane "github.com/google/go-containerregistry/cmd/crane@${CRANE_VERSION}" ||
    echo "warning: crane not installed (optional)" >&2
fi
