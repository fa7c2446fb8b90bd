#!/usr/bin/env bash
# Installs the Debian packages lasync needs to build and test, if any are missing; with --bench
# also the benchmarks' peers (make bench shows a missing peer as n/a).
# Idempotent and quiet: does nothing when everything is there.
set -euo pipefail
PKGS=(make gcc pkg-config lua5.4 liblua5.4-dev libuv1-dev libcurl4-openssl-dev
      lua-busted lua-cjson luarocks lua-check lua-luv valgrind python3 openssl nghttp2-server
      brotli zstd chromium)
if [ "${1:-}" = "--bench" ]; then
  PKGS+=(nginx-light libnginx-mod-http-echo wrk python3-aiohttp lua-http lua5.3)
  PKGS+=(python3-uvloop)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
