#!/bin/sh
# bake-bench: what a pipeline spends getting warm Go caches, two ways, on
# the same data through one local registry (docs/BAKE.md):
#   pull:    crane export of the baked image, unpacked (what a node does
#            when the image is not cached yet, flattened)
#   restore: cache fetch of the same folders from an oci:// entry
#   download: the same go list -deps into an empty GOMODCACHE from a file://
#            GOPROXY (a lower bound: no network, no checksum database)
# The data: the modules of this repository's two binaries (go list -deps
# ./cmd/cache ./cmd/cache-serve downloads them) and the build
# cache of `go build ./internal/bake`. Prints one line per measurement;
# each is the median of RUNS (3).
set -eu
RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/bake-bench.XXXXXX)
REGPID=
cleanup() { [ -n "$REGPID" ] && kill "$REGPID" 2>/dev/null; chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
PATH=$(go env GOPATH)/bin:$PATH
for tool in registry crane; do
	command -v $tool >/dev/null || { echo "bake-bench: $tool is not installed (make tools)" >&2; exit 1; }
done
PROXY="file://$(go env GOMODCACHE)/cache/download"
export GOFLAGS=-mod=mod GOSUMDB=off GOTOOLCHAIN=local GOPROXY="$PROXY"

echo "warming the caches (modules of $ROOT/cmd/..., build of ./internal/bake)" >&2
(cd "$ROOT" && GOMODCACHE=$WORK/mod GOCACHE=$WORK/build go list -deps ./cmd/cache ./cmd/cache-serve >/dev/null && GOMODCACHE=$WORK/mod GOCACHE=$WORK/build GOFLAGS="-mod=mod -modcacherw" go build -o /dev/null ./internal/bake)
chmod -R u+w "$WORK/mod"
go build -o "$WORK/cache" "$ROOT/cmd/cache"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT}
YML
OTEL_TRACES_EXPORTER=none registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGPID=$!
REG=127.0.0.1:$PORT
for _ in $(seq 50); do curl -fs "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

# A small base (one empty OCI image) so that the pull measures the caches.
crane append --insecure --oci-empty-base -f /dev/null -t "$REG/base:1" 2>/dev/null >/dev/null || {
	tar -cf "$WORK/empty.tar" -T /dev/null
	crane append --insecure --oci-empty-base -f "$WORK/empty.tar" -t "$REG/base:1" >/dev/null
}

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
elapsed() { echo "$2 - $1" | bc; }

mod_bytes=$(du -sb "$WORK/mod" | cut -f1)
build_bytes=$(du -sb "$WORK/build" | cut -f1)
files=$(find "$WORK/mod" "$WORK/build" -type f | wc -l)

t0=$(now)
"$WORK/cache" bake --quiet --insecure --base "$REG/base:1" \
	--layer "$WORK/mod:/go/pkg/mod:mtime=fixed" --layer "$WORK/build:/var/cache/go-build" \
	--tag "$REG/ci/go:nightly" >/dev/null
t1=$(now)
bake_s=$(elapsed "$t0" "$t1")
t0=$(now)
"$WORK/cache" upload --quiet --insecure --store "oci://$REG/cache" --key go-1 --folder "$WORK/mod" --folder "$WORK/build" >/dev/null
t1=$(now)
save_s=$(elapsed "$t0" "$t1")
image_bytes=$(crane manifest --insecure "$REG/ci/go:nightly" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(l["size"] for l in m["layers"]))')

pulls= restores= downloads=
for i in $(seq "$RUNS"); do
	rm -rf "$WORK/pull" "$WORK/restore" "$WORK/dl"; mkdir -p "$WORK/pull" "$WORK/restore/mod" "$WORK/restore/build" "$WORK/dl"
	sync
	t0=$(now); crane export --insecure "$REG/ci/go:nightly" - | tar -x -C "$WORK/pull"; t1=$(now)
	pulls="$pulls $(elapsed "$t0" "$t1")"
	t0=$(now)
	"$WORK/cache" fetch --quiet --insecure --store "oci://$REG/cache" --key go-1 --folder "$WORK/restore/mod" --folder "$WORK/restore/build" --strict >/dev/null
	t1=$(now)
	restores="$restores $(elapsed "$t0" "$t1")"
	t0=$(now); (cd "$ROOT" && GOMODCACHE=$WORK/dl GOCACHE=$WORK/dlbuild GOFLAGS="-mod=mod -modcacherw" go list -deps ./cmd/cache ./cmd/cache-serve >/dev/null); t1=$(now)
	downloads="$downloads $(elapsed "$t0" "$t1")"
done
echo "data: GOMODCACHE $mod_bytes bytes, GOCACHE $build_bytes bytes, $files files"
echo "bake (build layers, push): ${bake_s}s, image layers $image_bytes bytes compressed (gzip)"
echo "save (cache upload): ${save_s}s"
echo "pull+unpack (crane export | tar -x), median of $RUNS: $(echo $pulls | tr ' ' '\n' | median)s  [$pulls ]"
echo "restore (cache fetch), median of $RUNS: $(echo $restores | tr ' ' '\n' | median)s  [$restores ]"
echo "module download (go list -deps, file:// proxy), median of $RUNS: $(echo $downloads | tr ' ' '\n' | median)s  [$downloads ]"
