#!/usr/bin/env bash
# One entry point for a fresh Debian machine, as root:
#   ./dev.sh run    install what running needs, then run the proxy on its bundled default policy
#   ./dev.sh test   install what the tests need, then run every test (what CI runs)
#   ./dev.sh bench  install what the benchmarks need, then run the benchmark suite (args go to it)
#   ./dev.sh fuzz   install what the tests need, then fuzz the parsers (args go to tests.fuzz)
#   ./dev.sh soak   install what the tests need, then run benchmarks/soak.py (args go to it)
#   ./dev.sh setup  install what the tests need, and nothing else
#
# Python packages go into a virtual environment of this checkout's own, `.venv/` (git ignores
# it), never into the system interpreter: Debian's python3 is "externally managed" (PEP 668),
# and this distribution installs top-level packages named `proxy`, `pac` and `rules`, which
# would overwrite other distributions' (PyPI's proxy.py, django-rules) in a shared one.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
# What running needs, and what only the tests and the benchmarks need.
APT_RUN=(python3 python3-venv iptables nftables iproute2 util-linux)
APT_TEST=(tinyproxy microsocks stunnel4 openssl shellcheck wrk procps nginx-light squid haproxy
  dnsmasq-base bind9-dnsutils curl wget)
# Units the test packages ship: they must never run as system services here (the tests and
# the benchmarks start their own, in namespaces of their own).
UNITS=(tinyproxy.service nginx.service microsocks.service squid.service haproxy.service)

POLICY=/usr/sbin/policy-rc.d
POLICY_SAVED=""

hold_services() {
  # invoke-rc.d (what Debian's maintainer scripts call to start a service, with or without
  # systemd) asks policy-rc.d first; exit status 101 means "not allowed". Any policy already
  # there is put back afterwards, byte for byte.
  if [ -e "$POLICY" ]; then
    POLICY_SAVED=$(mktemp)
    cp -p "$POLICY" "$POLICY_SAVED"
  fi
  printf '#!/bin/sh\n# written by airgap-proxy dev.sh while it installs packages\nexit 101\n' >"$POLICY"
  chmod 0755 "$POLICY"
}

release_services() {
  if [ -n "$POLICY_SAVED" ]; then
    cp -p "$POLICY_SAVED" "$POLICY"
    rm -f "$POLICY_SAVED"
    POLICY_SAVED=""
  else
    rm -f "$POLICY"
  fi
}

unit_state() {
  # Empty when the unit is not installed (systemd prints nothing, or "not-found").
  local s
  s=$(systemctl is-enabled "$1" 2>/dev/null || true)
  [ "$s" = not-found ] || printf '%s' "$s"
}

apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  local systemd=0 before=() u i
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemd=1
    for u in "${UNITS[@]}"; do before+=("$(unit_state "$u")"); done
  fi
  hold_services
  trap release_services EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  release_services
  trap - EXIT
  if [ "$systemd" = 1 ]; then
    # Not started (policy-rc.d), but enabled for the next boot: disable exactly the units
    # this install added, and leave any that were there before alone.
    for i in "${!UNITS[@]}"; do
      u=${UNITS[$i]}
      if [ -z "${before[$i]}" ] && [ "$(unit_state "$u")" = enabled ]; then
        systemctl disable --quiet "$u"
      fi
    done
  fi
}

venv() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    return 0
  fi
  rm -rf "$VENV"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "dev.sh: python3 is $(python3 --version 2>&1); airgap-proxy needs 3.11 or later" >&2
    exit 1
  }
  python3 -m venv "$VENV"
}

pip_install() {
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"
}

# Wheels for the packaging test, which builds and installs this checkout offline (it runs in
# a network namespace of its own): the build backend and the runtime dependencies.
wheelhouse() {
  local reqs
  reqs=$("$VENV/bin/python" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    t = tomllib.load(f)
print("\n".join(t["build-system"]["requires"] + t["project"]["dependencies"]))')
  # shellcheck disable=SC2086 # one requirement per line, none with spaces
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check -d "$VENV/wheelhouse" $reqs
}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "dev.sh: run as root (it installs Debian packages; the tests need network namespaces)" >&2
    echo "dev.sh: to install only the commands, without root, see README 'Installing without root'" >&2
    exit 2
  fi
}

setup() {
  need_root
  case "$1" in
    run)
      apt_install "${APT_RUN[@]}"
      venv
      pip_install -e .
      ;;
    bench)
      apt_install "${APT_RUN[@]}" "${APT_TEST[@]}"
      venv
      pip_install -e '.[bench]'
      ;;
    test)
      apt_install "${APT_RUN[@]}" "${APT_TEST[@]}"
      venv
      pip_install -e '.[test,bench]'
      wheelhouse
      ;;
  esac
}

cmd=${1:-}
[ "$#" -gt 0 ] && shift
case "$cmd" in
  setup) setup test ;;
  run)
    setup run
    exec "$VENV/bin/airgap-proxy" run "$@"
    ;;
  test)
    setup test
    PATH="$PWD/$VENV/bin:$PATH" exec bash tests/run.sh "$@"
    ;;
  bench)
    setup bench
    exec "$VENV/bin/python" benchmarks/run.py "$@"
    ;;
  fuzz)
    setup test
    exec "$VENV/bin/python" -m tests.fuzz "$@"
    ;;
  soak)
    setup test
    exec "$VENV/bin/python" benchmarks/soak.py "$@"
    ;;
  *)
    echo "usage: ./dev.sh run|test|bench|fuzz|soak|setup [args...]" >&2
    exit 2
    ;;
esac
