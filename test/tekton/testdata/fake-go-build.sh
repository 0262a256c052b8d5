#!/bin/sh
# Stands in for `go build` in the harness: fills GOCACHE and GOMODCACHE the
# way a build does, writing an entry only when it is not there yet (so a
# restored cache is used, not rewritten). The module cache gets one download
# per go.sum content, so a go.sum change adds a little new content.
set -eu
: "${GOCACHE:?}" "${GOMODCACHE:?}"
mkdir -p "$GOCACHE" "$GOMODCACHE/cache/download/example.com/dep/@v"
i=0
while [ "$i" -lt 48 ]; do
  f="$GOCACHE/$(printf %02x "$i")/entry-$i-a"
  if [ ! -f "$f" ]; then
    mkdir -p "$(dirname "$f")"
    head -c 32768 /dev/urandom > "$f"
    built=$((${built:-0} + 1))
  fi
  i=$((i + 1))
done
sum=$(sha256sum go.sum | cut -c1-16)
zip="$GOMODCACHE/cache/download/example.com/dep/@v/v1.0.0-$sum.zip"
if [ ! -f "$zip" ]; then
  head -c 65536 /dev/urandom > "$zip"
  downloaded=1
fi
echo "fake go build: ${built:-0} cache entries built, ${downloaded:-0} module downloaded"
