# Sourced by hack/install-*-tools.sh: install Go tools into $gobin only when
# they are missing (on PATH or in $gobin), so a warm machine skips them.
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
