#!/usr/bin/env bash
# Installs the servers the s3://, gs:// and azblob:// store tests start, each
# only when it is missing:
#   minio            S3 (the most faithful)      -> $(go env GOPATH)/bin   CLOUD_TOOLS_MINIO=0 skips it
#   versitygw        S3 (posix backend)          -> $(go env GOPATH)/bin   CLOUD_TOOLS_VERSITYGW=0 skips it
#   fake-gcs-server  GCS                         -> $(go env GOPATH)/bin
#   azurite-blob     Azure Blob (Azurite, npm)   -> $CACHE_TOOLS_DIR/azurite (default <repo>/.tools/azurite)
# Cold installs on 2 cores: minio ~8 min (2.5 min with a warm module cache),
# versitygw ~3 min, fake-gcs-server ~2 min, Azurite ~1 min; warm, seconds.
# Azurite is pinned to 3.35.0: 3.36 needs Node >= 21, 3.37 Node >= 22.
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
VERSITYGW_VERSION=v1.8.0
FAKE_GCS_VERSION=v1.56.1
AZURITE_VERSION=3.35.0

repo="$(cd "$(dirname "$0")/.." && pwd)"
tools="${CACHE_TOOLS_DIR:-$repo/.tools}"

# shellcheck source=hack/lib-install.sh
. "$(dirname "$0")/lib-install.sh"

install_tool fake-gcs-server "github.com/fsouza/fake-gcs-server@${FAKE_GCS_VERSION}"
if [ "${CLOUD_TOOLS_VERSITYGW:-1}" != 0 ]; then
  install_tool versitygw "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}"
fi
if [ "${CLOUD_TOOLS_MINIO:-1}" != 0 ]; then
  install_tool minio "github.com/minio/minio@${MINIO_VERSION}"
fi

azurite="$tools/azurite/node_modules/.bin/azurite-blob"
installed="$(node -p "require('$tools/azurite/node_modules/azurite/package.json').version" 2>/dev/null || true)"
if [ "$installed" = "$AZURITE_VERSION" ] && [ -x "$azurite" ]; then
  :
elif [ -z "$installed" ] && command -v azurite-blob >/dev/null 2>&1; then
  : # on PATH: the tests use it
elif ! command -v npm >/dev/null 2>&1; then
  echo "warning: npm not found: Azurite not installed, the azblob:// tests will skip (or fail in CI)" >&2
else
  echo "installing azurite@${AZURITE_VERSION} into $tools/azurite" >&2
  mkdir -p "$tools/azurite"
  npm install --prefix "$tools/azurite" --no-audit --no-fund --loglevel=error "azurite@${AZURITE_VERSION}" >&2
fi
