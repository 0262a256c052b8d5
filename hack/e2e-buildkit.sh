#!/usr/bin/env bash
# make e2e-buildkit (opt-in: not in make test or CI): a real BuildKit exports
# its cache to cache-serve through the GitHub Actions cache protocol and a
# second build, after `buildctl prune --all`, imports it; for versions 1
# (url) and 2 (url_v2). Needs root (buildkitd with Debian's runc and the
# native snapshotter) and a FROM scratch + COPY build, so nothing is pulled.
#
# buildkitd and buildctl v0.32.2 come from the Go module proxy. `go install
# MODULE@VERSION` refuses the module (its go.mod has exclude directives), so
# the module is downloaded and built as the main module, its go.mod in force.
# Cold: ~7 min on 2 cores; warm, seconds. runc comes from apt when missing.
set -euo pipefail

BUILDKIT_VERSION=v0.32.2
repo="$(cd "$(dirname "$0")/.." && pwd)"
tools="${CACHE_TOOLS_DIR:-$repo/.tools}"
bk="$tools/buildkit-$BUILDKIT_VERSION"

if [ "$(id -u)" != 0 ]; then
  echo "e2e-buildkit: buildkitd needs root here (rootless needs newuidmap and a user namespace)" >&2
  exit 2
fi
if ! command -v runc >/dev/null 2>&1; then
  echo "installing runc (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >&2
fi
if [ ! -x "$bk/bin/buildkitd" ] || [ ! -x "$bk/bin/buildctl" ]; then
  echo "building buildkitd and buildctl $BUILDKIT_VERSION into $bk/bin" >&2
  src="$(cd /tmp && go mod download -json "github.com/moby/buildkit@$BUILDKIT_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  rm -rf "$bk/src" && mkdir -p "$bk/bin" && cp -r "$src" "$bk/src" && chmod -R u+w "$bk/src"
  (cd "$bk/src" && CGO_ENABLED=0 go build -mod=mod -o "$bk/bin/" ./cmd/buildkitd ./cmd/buildctl)
  rm -rf "$bk/src"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$repo" && go build -o "$work/cache-serve" ./cmd/cache-serve && go build -o "$work/cache" ./cmd/cache)
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
server="http://127.0.0.1:$port/"
cred="e2e-buildkit-$RANDOM$RANDOM"
printf %s "$cred" > "$work/cred"
printf 'tokens:\n  - name: e2e\n    sha256: %s\n    write: main\n' "$(printf %s "$cred" | sha256sum | cut -d' ' -f1)" > "$work/tokens.yaml"
"$work/cache-serve" --listen "127.0.0.1:$port" --store "file://$work/store" --tokens-file "$work/tokens.yaml" > "$work/serve.log" 2>&1 &
pids+=($!)
"$bk/bin/buildkitd" --root "$work/buildkit" --addr "unix://$work/buildkitd.sock" \
  --oci-worker-snapshotter native --oci-worker-binary "$(command -v runc)" --containerd-worker=false > "$work/buildkitd.log" 2>&1 &
pids+=($!)
B=("$bk/bin/buildctl" --addr "unix://$work/buildkitd.sock")
for _ in $(seq 100); do
  curl -fsS "${server}healthz" >/dev/null 2>&1 && "${B[@]}" debug workers >/dev/null 2>&1 && break
  sleep 0.2
done

# The runtime token, as the Tekton example's gha-token step gets it.
ACTIONS_RUNTIME_TOKEN="$("$work/cache" serve token --server "$server" --token-file "$work/cred" | tail -n 1)"
export ACTIONS_RUNTIME_TOKEN

mkdir -p "$work/ctx"
printf 'FROM scratch\nCOPY data.bin /data.bin\n' > "$work/ctx/Dockerfile"
build() { # build NAME ARGS...: an OCI tarball, the plain progress in NAME.log
  local name="$1"; shift
  "${B[@]}" build --progress plain --frontend dockerfile.v0 --local context="$work/ctx" --local dockerfile="$work/ctx" \
    --output "type=oci,dest=$work/$name.tar" "$@" > "$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; exit 1; }
}
for version in 1 2; do
  # 3 MiB of random bytes: a layer over go-actions-cache's 1 MiB block size.
  head -c $((3 << 20)) /dev/urandom > "$work/ctx/data.bin"
  if [ "$version" = 1 ]; then cache="type=gha,version=1,url=$server"; else cache="type=gha,version=2,url_v2=$server"; fi
  "${B[@]}" prune --all >/dev/null
  build "v$version-export" --export-cache "$cache,mode=max"
  grep -q "exporting to GitHub Actions Cache" "$work/v$version-export.log" || { echo "v$version: no cache export" >&2; exit 1; }
  layer="$(sed -n 's/.*writing layer sha256:\([0-9a-f]\{64\}\).*/\1/p' "$work/v$version-export.log" | head -n 1)"
  [ -n "$layer" ] || { cat "$work/v$version-export.log" >&2; echo "v$version: the export wrote no layer" >&2; exit 1; }
  "${B[@]}" prune --all >/dev/null
  before="$(grep -c "/gha/blob/d/$layer" "$work/serve.log" || true)"
  build "v$version-import" --import-cache "$cache"
  grep -q "importing cache manifest from gha" "$work/v$version-import.log" || { cat "$work/v$version-import.log" >&2; echo "v$version: no cache import" >&2; exit 1; }
  after="$(grep -c "/gha/blob/d/$layer" "$work/serve.log" || true)"
  [ "$after" -gt "$before" ] || { cat "$work/v$version-import.log" >&2; echo "v$version: the second build did not read the layer from cache-serve" >&2; exit 1; }
  m1="$(sed -n 's/.*exporting manifest sha256:\([0-9a-f]*\).*/\1/p' "$work/v$version-export.log")"
  m2="$(sed -n 's/.*exporting manifest sha256:\([0-9a-f]*\).*/\1/p' "$work/v$version-import.log")"
  [ -n "$m1" ] && [ "$m1" = "$m2" ] || { echo "v$version: manifests differ ($m1, $m2)" >&2; exit 1; }
  echo "e2e-buildkit v$version: exported layer sha256:$layer, the second build imported it from cache-serve (manifest sha256:$m1 both times)"
done
