#!/bin/sh
# airgap-proxy sidecar entrypoint. Runs as root (it needs NET_ADMIN for the rules):
#
#   1. installs the redirect and leak-guard rules (`airgap-proxy iptables apply`); if that
#      fails, it installs reject-all instead and exits: nothing flows;
#   2. starts the proxy as a non-root uid that keeps only CAP_NET_ADMIN (to mark its own
#      upstream sockets, which the rules exempt);
#   3. when the proxy exits, for any reason, replaces the redirect with reject-all, so a
#      dead proxy never means open egress for the containers that share this namespace;
#   4. on SIGHUP, re-applies the rules from the (new) policy file, in one transaction, then
#      passes the signal on to the proxy, which reloads the policy: `docker compose kill
#      -s HUP` reloads both. Rules that cannot be applied stay as they were.
#
# Usage:  entrypoint.sh [extra `airgap-proxy run` options...]
#         entrypoint.sh healthcheck     (ready: rules applied and the proxy listening)
#         entrypoint.sh rules           (step 1 alone, then exit 0: a Kubernetes init
#                                        container; the proxy runs in a container of its own
#                                        as its uid, exempt by --proxy-uid in AIRGAP_IPTABLES_ARGS)
#
# Environment, with defaults:
#   AIRGAP_CONFIG=/etc/airgap-proxy/admin-settings.json
#   AIRGAP_PROXY_PORT=15001            the proxy's port (all redirects go there)
#   AIRGAP_LISTEN="127.0.0.1:PORT [::1]:PORT"   (0.0.0.0:PORT with --from-interface)
#   AIRGAP_MARK=0x4147                 SO_MARK of the proxy's own sockets
#   AIRGAP_PROXY_UID=10001 AIRGAP_PROXY_GID=10001
#   AIRGAP_BACKEND=iptables            or nft
#   AIRGAP_BLOCK_UNREDIRECTED=1        the leak guard (0 turns it off; other values: refused)
#   AIRGAP_IPTABLES_ARGS=""            more `airgap-proxy iptables` options, e.g.
#                                      "--ipv6 drop --from-interface br0 --upstream 10.0.0.5:3128"
#   AIRGAP_BIN=airgap-proxy            the command (tests point it at a checkout)
#   AIRGAP_STATE_DIR=/run/airgap-proxy
set -eu

config=${AIRGAP_CONFIG:-/etc/airgap-proxy/admin-settings.json}
port=${AIRGAP_PROXY_PORT:-15001}
mark=${AIRGAP_MARK:-0x4147}
uid=${AIRGAP_PROXY_UID:-10001}
gid=${AIRGAP_PROXY_GID:-10001}
backend=${AIRGAP_BACKEND:-iptables}
bin=${AIRGAP_BIN:-airgap-proxy}
fw_args=${AIRGAP_IPTABLES_ARGS:-}
state=${AIRGAP_STATE_DIR:-/run/airgap-proxy}
if [ -e /proc/net/if_inet6 ]; then
  listen=${AIRGAP_LISTEN:-"127.0.0.1:$port [::1]:$port"}
else
  listen=${AIRGAP_LISTEN:-"127.0.0.1:$port"}
fi

log() {
  echo "airgap-entrypoint: $*" >&2
}

healthcheck() {
  [ -f "$state/rules-applied" ] || return 1
  # A listening socket (state 0A) on the port, in this namespace; no connection is made,
  # so the check never shows up as traffic to the proxy.
  hex=$(printf '%04X' "$port")
  grep -Eq "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

firewall() {
  # shellcheck disable=SC2086 # AIRGAP_BIN and AIRGAP_IPTABLES_ARGS are word lists
  $bin iptables "$@" --backend "$backend" --proxy-port "$port" --mark "$mark" $fw_args
}

lockdown() {
  rm -f "$state/rules-applied"
  if firewall apply --lockdown; then
    log "egress locked down (reject-all)"
    return 0
  fi
  # Last resort when even the lockdown could not be generated: plain rules, in front.
  log "lockdown through airgap-proxy failed; rejecting all egress with plain iptables"
  ok=0
  for tool in iptables ip6tables; do
    if $tool -w -I OUTPUT 1 ! -o lo -j REJECT && $tool -w -I FORWARD 1 -j REJECT; then
      ok=$((ok + 1))
    else
      log "$tool: could not install the reject rules: its traffic may be OPEN"
    fi
  done
  [ "$ok" -gt 0 ] || log "could not install any reject rule: this namespace may be OPEN"
}

if [ "${1:-}" = "healthcheck" ]; then
  healthcheck
  exit
fi

mkdir -p "$state"
rm -f "$state/rules-applied"

# Only "1" and "0" mean anything: compose turns `true` into "true", and a value read as
# "off" by mistake would let UDP, QUIC and other protocols go around the proxy.
case "${AIRGAP_BLOCK_UNREDIRECTED:-1}" in
  1) guard="--block-unredirected" ;;
  0) guard="" ;;
  *)
    log "AIRGAP_BLOCK_UNREDIRECTED must be 1 or 0, not '$AIRGAP_BLOCK_UNREDIRECTED'; locking down"
    lockdown
    exit 1
    ;;
esac
# shellcheck disable=SC2086 # $guard is empty or one word
if ! firewall apply --config "$config" $guard; then
  log "applying the rules failed; locking down"
  lockdown
  exit 1
fi
touch "$state/rules-applied"
if [ "${1:-}" = "rules" ]; then
  log "rules applied; the proxy is started elsewhere"
  exit 0
fi

# The proxy's argument list: `run`, the listeners, then whatever was passed to us.
set -- run --config "$config" --mark "$mark" "$@"
for address in $listen; do
  set -- "$@" --listen "$address"
done

child=""
stopping=0
# shellcheck disable=SC2317 # called by the trap below
on_signal() {
  stopping=1
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
  fi
}
# shellcheck disable=SC2317 # called by the trap below
on_reload() {
  # The rules first, so the ports the new policy polices are redirected when it takes
  # effect; a policy the rules cannot be made from leaves them (and, as the proxy refuses
  # it too, the policy) as they were.
  # shellcheck disable=SC2086 # $guard is empty or one word
  if firewall apply --config "$config" $guard; then
    log "SIGHUP: redirect rules re-applied; reloading the proxy"
  else
    log "SIGHUP: re-applying the redirect rules failed; the rules in force stay"
  fi
  if [ -n "$child" ]; then
    kill -HUP "$child" 2>/dev/null || true
  fi
}
trap on_signal TERM INT
trap on_reload HUP

# shellcheck disable=SC2086 # AIRGAP_BIN is a word list
setpriv --reuid="$uid" --regid="$gid" --clear-groups \
  --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin \
  --no-new-privs -- $bin "$@" &
child=$!
log "proxy started (pid $child, uid $uid)"

status=0
# `wait` returns early when a trapped signal arrives (a SIGHUP's reload included); wait
# again until the proxy is gone.
while :; do
  if wait "$child"; then status=0; else status=$?; fi
  if ! kill -0 "$child" 2>/dev/null; then
    break
  fi
done
log "proxy exited with status $status; locking down"
lockdown
if [ "$stopping" = "1" ]; then
  exit 0
fi
# The proxy is not supposed to end on its own: report it as a failure even on status 0.
[ "$status" -ne 0 ] || status=1
exit "$status"
