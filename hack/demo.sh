#!/usr/bin/env bash
# make demo: the main job on the embedded default, a local file:// store.
# A "build" fills a cache folder (a copy of Go's own source tree, ~12,000
# real files); upload saves it; a fresh workspace fetches it back; a second
# save after a small change sends only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="$PWD/bin/cache"
DEMO="$PWD/demo"
rm -rf "$DEMO"
mkdir -p "$DEMO/ws1" "$DEMO/ws2"
STORE="file://$DEMO/store"
SRC="$(go env GOROOT)/src"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
project() {  # a tiny project with a lock file
  printf 'module example.com/demo\n\ngo 1.22\n' > "$1/go.mod"
  printf 'example.com/dep v1.0.0 h1:demo=\n' > "$1/go.sum"
}

project "$DEMO/ws1"
say "run 1, fetch: the store is empty, so a miss (exit code 0: a miss never fails the pipeline)"
"$CACHE" fetch --source "$STORE/go-{{hash}}" --restore-keys go- \
  --workingdir "$DEMO/ws1" --folder "$DEMO/ws1/.cache" --results-dir "$DEMO/results1"
echo "results: fetched=$(cat "$DEMO/results1/fetched") restored=$(cat "$DEMO/results1/restored")"

say "run 1, the build fills the cache folder ($(du -sh "$SRC" | cut -f1) of Go source)"
cp -a "$SRC" "$DEMO/ws1/.cache"

say "run 1, upload: every file is new"
"$CACHE" upload --target "$STORE/go-{{hash}}" --workingdir "$DEMO/ws1" --folder "$DEMO/ws1/.cache"

project "$DEMO/ws2"
say "run 2, fetch in a fresh workspace: a hit"
"$CACHE" fetch --source "$STORE/go-{{hash}}" --restore-keys go- \
  --workingdir "$DEMO/ws2" --folder "$DEMO/ws2/.cache" --results-dir "$DEMO/results2"
echo "results: fetched=$(cat "$DEMO/results2/fetched") restored=$(cat "$DEMO/results2/restored") key=$(cat "$DEMO/results2/key")"
if diff -r --no-dereference -x .tekton-cache-state "$DEMO/ws1/.cache" "$DEMO/ws2/.cache" >/dev/null; then
  echo "the restored folder is identical to the saved one (diff -r)"
else
  echo "the restored folder differs from the saved one" >&2; exit 1
fi

say "run 2, upload: the key exists, so one cheap check and nothing sent"
"$CACHE" upload --target "$STORE/go-{{hash}}" --workingdir "$DEMO/ws2" --folder "$DEMO/ws2/.cache"

say "run 3: go.sum changed, so the exact key misses and the restore key brings the newest entry"
printf 'example.com/dep v1.1.0 h1:demo2=\n' > "$DEMO/ws2/go.sum"
"$CACHE" fetch --source "$STORE/go-{{hash}}" --restore-keys go- \
  --workingdir "$DEMO/ws2" --folder "$DEMO/ws2/.cache" --results-dir "$DEMO/results3"
echo "results: fetched=$(cat "$DEMO/results3/fetched") restored=$(cat "$DEMO/results3/restored") matched-key=$(cat "$DEMO/results3/matched-key")"
mkdir -p "$DEMO/ws2/.cache/newdep"
head -c 200000 /dev/urandom > "$DEMO/ws2/.cache/newdep/blob.bin"
say "run 3, upload: only the new files are read and sent"
"$CACHE" upload --target "$STORE/go-{{hash}}" --workingdir "$DEMO/ws2" --folder "$DEMO/ws2/.cache"

say "the store"
du -sh "$DEMO/store"
ls "$DEMO/store/v1/refs"
