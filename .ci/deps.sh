#!/usr/bin/env bash
# Installs the real peers the interop tests talk to, when they are missing:
# mosquitto, openssl, curl and chromium from Debian, esptool-js from npm (`npm ci` from
# the committed package-lock.json, in the test directory that pins it).
# Safe to run repeatedly.
#
# Never aborts the suite outside CI: when a registry is unreachable (offline)
# it says so in one line and the tests needing that peer skip, each with one
# clear line. In CI (CI=true) a peer that cannot be installed is an error.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=0
warn() {
  echo "deps: $*" >&2
  failed=1
}

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v chromium >/dev/null 2>&1 || need+=(chromium) # lab console browser tests (chromedp)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    warn "missing ${need[*]}: install them (apt-get install ${need[*]}) or the interop tests needing them skip"
  else
    echo "deps: installing ${need[*]} from Debian"
    if ! timeout 300 apt-get update -qq -o Acquire::Retries=0 >/dev/null 2>&1 ||
      ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; then
      warn "could not install ${need[*]} from Debian (offline?): the interop tests needing them skip"
    fi
  fi
fi

# npm-based peers: every package.json under a testdata directory, installed
# exactly as locked.
if ! command -v npm >/dev/null 2>&1; then
  warn "npm missing: the esptool-js interop test skips"
else
  for pj in $(git ls-files '*testdata/*package.json' 2>/dev/null); do
    dir=$(dirname "$pj")
    if [ ! -f "$dir/package-lock.json" ]; then
      warn "$dir has no package-lock.json: commit one (npm install --package-lock-only)"
      continue
    fi
    # node_modules/.package-lock.json is npm's record of what it installed:
    # newer than the lockfile means the install is current.
    if [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
      continue
    fi
    echo "deps: npm ci in $dir"
    if ! (cd "$dir" && timeout 300 npm ci --no-audit --no-fund --loglevel=error \
      --fetch-retries=1 --fetch-timeout=20000 >/dev/null 2>&1); then
      rm -rf "$dir/node_modules"
      warn "npm ci in $dir failed (registry unreachable?): the tests needing it skip"
    fi
  done
fi

if [ "$failed" = 1 ] && [ "${CI:-}" = true ]; then
  echo "deps: CI=true: a missing peer is an error here" >&2
  exit 1
fi
exit 0
