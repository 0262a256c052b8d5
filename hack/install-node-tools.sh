#!/usr/bin/env bash
# Installs the npm packages the GitHub Actions cache tests drive (test/gha),
# only when they are missing or differ from the committed lock file:
#   @actions/cache  6.3.0 (and its dependencies, pinned by test/gha/package-lock.json)
#                   -> $CACHE_TOOLS_DIR/gha-peers/node_modules (default <repo>/.tools/gha-peers)
# Needs node 20 and npm; without npm it warns and the tests skip (or fail in CI).
# Cold install (npm ci, 44 packages, ~45 MB) ~10 s; warm, nothing is done.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
tools="${CACHE_TOOLS_DIR:-$repo/.tools}"
dest="$tools/gha-peers"
src="$repo/test/gha"

if [ -f "$dest/node_modules/@actions/cache/package.json" ] && cmp -s "$src/package-lock.json" "$dest/package-lock.json"; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "warning: npm not found: @actions/cache not installed, the test/gha tests will skip (or fail in CI)" >&2
  exit 0
fi
echo "installing @actions/cache (test/gha/package-lock.json) into $dest" >&2
mkdir -p "$dest"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
npm ci --prefix "$dest" --no-audit --no-fund --loglevel=error >&2
