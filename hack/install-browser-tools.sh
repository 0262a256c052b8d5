#!/usr/bin/env bash
# Installs the headless browser the status page test uses (internal/server
# TestStatusPageChromium), only when it is missing:
#   chromium  Debian's package, through apt-get (needs root, or sudo without a
#             password); set BROWSER_TOOLS=0 to skip it.
# A cold install (apt-get update, then chromium and its ~60 libraries) took 31 s
# on the 2-core dev machine (Debian 12); warm, nothing is done.
set -euo pipefail

if [ "${BROWSER_TOOLS:-1}" = 0 ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "warning: chromium missing and not root: run 'apt-get install -y chromium' as root" >&2
    exit 0
  fi
fi
echo "installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
