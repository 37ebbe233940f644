#!/usr/bin/env bash
# One entry point for a fresh Debian machine, as root:
#   ./dev.sh run    install everything, then run the proxy on its bundled default policy
#   ./dev.sh test   install everything, then run every test (what CI runs)
#   ./dev.sh bench  install everything, then run the benchmark suite (args go to it)
#   ./dev.sh setup  install everything only
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(iptables nftables iproute2 util-linux tinyproxy microsocks stunnel4 openssl
  shellcheck wrk procps nginx-light)

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
    # The upstream proxies and the benchmark origin are started by the tests and the
    # benchmark suite in namespaces of their own, never as system services: stop the
    # services this install just started (and only those).
    for p in "${missing[@]}"; do
      case "$p" in
        tinyproxy | microsocks | nginx-light)
          svc=${p%-light}
          if command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
          fi
          pkill -x "$svc" >/dev/null 2>&1 || true
          ;;
      esac
    done
  fi
  python3 -m pip install -q --disable-pip-version-check -e '.[test,bench]' 2>&1 | grep -v -e '^WARNING' -e 'pip as the' || true
  python3 -c 'import proxy, pac, rules, uvloop, pacparser, dukpy' || { echo "dev.sh: install failed" >&2; exit 1; }
}

case "${1:-}" in
  setup) setup ;;
  run) setup; shift; exec airgap-proxy run "$@" ;;
  test) setup; shift; exec bash tests/run.sh "$@" ;;
  bench) setup; shift; exec python3 benchmarks/run.py "$@" ;;
  *) echo "usage: ./dev.sh run|test|bench|setup [args...]" >&2; exit 2 ;;
esac
