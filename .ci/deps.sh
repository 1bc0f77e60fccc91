#!/usr/bin/env bash
# Installs the real peers the interop tests talk to, when they are missing:
# mosquitto, openssl, curl and chromium from Debian, esptool-js from npm (into the test
# directory that pins its version). Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || need+=(chromium) # lab console browser tests (chromedp)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${need[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: install them (apt-get install ${need[*]}) or the interop tests will skip" >&2
  fi
fi

# npm-based peers: every package.json under a testdata directory.
for pj in $(git ls-files '*testdata/*package.json' 2>/dev/null); do
  dir=$(dirname "$pj")
  if [ ! -d "$dir/node_modules" ]; then
    echo "installing npm packages in $dir"
    if [ -f "$dir/package-lock.json" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
    fi
  fi
done
