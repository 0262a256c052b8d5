#!/bin/sh
# Renders the release into DIR (default dist): one file per StepAction
# (cache-fetch.yaml, cache-upload.yaml), each a single document that Tekton's
# http and git resolvers can read from a raw URL, and release.yaml with both
# for kubectl apply. The image is built and pushed once with ko, to
# KO_DOCKER_REPO, and every ko:// image is replaced by it, pinned by digest.
#
#   KO_DOCKER_REPO=registry.example.com/tekton-cache VERSION=v0.2.0 hack/release.sh [DIR]
#
# KO (default ko) and KO_FLAGS (extra `ko build` flags, e.g. --platform=...)
# may be set.
set -eu
: "${KO_DOCKER_REPO:?set KO_DOCKER_REPO, e.g. registry.example.com/tekton-cache}"
out=${1:-dist}
ko=${KO:-ko}
cd "$(dirname "$0")/.."
mkdir -p "$out"
# shellcheck disable=SC2086 # KO_FLAGS is a list of flags
image=$(VERSION="${VERSION:-}" "$ko" build --base-import-paths ${KO_FLAGS:-} ./cmd/cache)
case "$image" in
  *@sha256:*) ;;
  *) echo "ko build printed '$image', not an image pinned by digest" >&2; exit 1 ;;
esac
: > "$out/release.yaml"
for f in tekton/cache-fetch.yaml tekton/cache-upload.yaml; do
  name=$(basename "$f")
  sed "s|ko://github.com/tekton-cache/tekton-cache/cmd/cache|$image|" "$f" > "$out/$name"
  if grep -q 'ko://' "$out/$name"; then
    echo "$out/$name still names a ko:// image" >&2
    exit 1
  fi
  if [ -s "$out/release.yaml" ]; then echo --- >> "$out/release.yaml"; fi
  cat "$out/$name" >> "$out/release.yaml"
done
echo "released $image into $out/: cache-fetch.yaml, cache-upload.yaml, release.yaml" >&2
