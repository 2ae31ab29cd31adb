#!/usr/bin/env bash
# Installs the Debian packages the browser test and the benchmarks use, when missing.
# Needs root (as on CI and the dev machines); otherwise says what it skipped.
set -euo pipefail
wanted=(chromium wrk haproxy)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: not root or no apt-get; skipping ${missing[*]} (browser/bench tests will skip)" >&2
  exit 0
fi
echo "==> apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
