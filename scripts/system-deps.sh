#!/usr/bin/env bash
# Installs the Debian packages Ray Estate uses, when missing. Needs root (as on CI and the dev
# machines) and apt-get.
#
#   bash scripts/system-deps.sh        # everything (`make test`): prometheus, plus chromium, wrk and
#                                      # haproxy for the browser test and the benchmarks; without root
#                                      # it says what it skipped (those tests skip) and exits 0
#   bash scripts/system-deps.sh up     # what the local stack runs (`make up`): prometheus; without
#                                      # root it fails, naming the missing binary and the package
set -euo pipefail
mode=${1:-all}
runtime=(prometheus)
case "$mode" in
  up) wanted=("${runtime[@]}") ;;
  all) wanted=("${runtime[@]}" chromium wrk haproxy) ;;
  *) echo "usage: $0 [all|up]" >&2; exit 2 ;;
esac
missing=()
for pkg in "${wanted[@]}"; do
  # A binary installed some other way (on PATH) will do for make up.
  dpkg -s "$pkg" >/dev/null 2>&1 || { [ "$mode" = up ] && command -v "$pkg" >/dev/null; } || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  if [ "$mode" = up ]; then
    echo "make up: missing binary: ${missing[*]}, and this shell cannot install it (not root, or no apt-get)." >&2
    echo "         Install Debian's package as root: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "system-deps: not root or no apt-get; skipping ${missing[*]} (the tests that need them will skip)" >&2
  exit 0
fi
echo "==> apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's prometheus package enables its own service (all interfaces, port 9090, /etc/prometheus).
# Ray Estate runs its own, on loopback, started and stopped by make up / make down: keep Debian's off.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
  echo "==> disabled Debian's prometheus.service (make up starts its own on loopback)"
fi
