#!/usr/bin/env bash
# One entry point for a fresh Debian machine, as root:
#   ./dev.sh run    install everything, then run the proxy on its bundled default policy
#   ./dev.sh test   install everything, then run every test (what CI runs)
#   ./dev.sh setup  install everything only
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(iptables nftables iproute2 util-linux tinyproxy microsocks stunnel4 openssl shellcheck wrk procps)

setup() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "dev.sh: run as root (it installs packages; the tests need network namespaces)" >&2
    exit 2
  fi
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The upstream proxies are started by the tests, never as system services.
  for svc in tinyproxy microsocks; do
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
    pkill -x "$svc" >/dev/null 2>&1 || true
  done
  python3 -m pip install -q --disable-pip-version-check -e '.[test,bench]' 2>&1 | grep -v -e '^WARNING' -e 'pip as the' || true
  python3 -c 'import proxy, pac, rules, uvloop, pacparser, dukpy' || { echo "dev.sh: install failed" >&2; exit 1; }
}

case "${1:-}" in
  setup) setup ;;
  run) setup; shift; exec airgap-proxy run "$@" ;;
  test) setup; shift; exec bash tests/run.sh "$@" ;;
  *) echo "usage: ./dev.sh run|test|setup [args...]" >&2; exit 2 ;;
esac
