#!/usr/bin/env bash
# Runs every test inside a private network and mount namespace: the end-to-end tests add
# addresses, iptables rules and a private /etc/hosts there, and nothing can leak out.
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter on PATH is the one tested (./dev.sh test puts the checkout's .venv first);
# ruff and pytest run as its modules, so no other installation can stand in for them.
if [ "$(id -u)" -ne 0 ]; then
  echo "tests/run.sh: needs root (network namespaces, iptables)" >&2
  exit 2
fi
python3 -m ruff check .
python3 -m ruff format --check .
# The layering (pac below rules below proxy, sans-IO parsers, no CLI imported) and the types
# are checked rules, configured in pyproject.toml.
lint-imports --no-cache
python3 -m mypy
exec unshare --net --mount --fork -- bash -c '
  set -e
  mount --make-rprivate /
  # Named network namespaces (ip netns add) live as files in /run/netns: a private one, so a
  # test run never meets, nor deletes, another run'"'"'s namespaces of the same name.
  mkdir -p /run/netns
  mount -t tmpfs -o mode=0755 airgap-test-netns /run/netns
  ip link set lo up
  export AIRGAP_PRIVATE_NETNS=1
  exec python3 -m pytest -p no:cacheprovider "$@"' bash "$@"
