"""The `airgap-proxy` command: `run`, `explain`, `iptables`.

This is the only place that composes `rules/`, `pac/` and `proxy/` (design.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
from collections.abc import Sequence

from rules.config import ConfigError, ContainersProxyConfig, load_config, parse_config_text
from rules.policy import Policy

log = logging.getLogger("airgap.proxy")

#: The bundled default policy: an air gap. Every TCP port is policed and nothing is allowed.
DEFAULT_POLICY = """{
  "configurationFileVersion": 2,
  "containersProxy": {
    "locked": true,
    "mode": "manual",
    "http": "",
    "https": "",
    "exclude": "",
    "transparentPorts": "*"
  }
}"""


def parse_hostport(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); raises ValueError with a clear message."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{text!r}: expected HOST:PORT (IPv6 as [ADDR]:PORT)")
    if not host:
        raise ValueError(f"{text!r}: missing host")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return host, int(port_text)


def default_max_connections() -> int:
    """Each relayed connection holds two descriptors; keep a few for listeners and logs."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(1, (soft - 64) // 2)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _mark(text: str) -> int:
    value = int(text, 0)
    if not 0 < value < 2**32:
        raise argparse.ArgumentTypeError("must be 1..0xffffffff")
    return value


def _setup_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    audit = logging.getLogger("airgap.conn")
    audit_handler = logging.StreamHandler(sys.stderr)
    audit_handler.setFormatter(
        logging.Formatter("%(message)s" if json_logs else "%(asctime)s conn %(message)s")
    )
    audit.handlers[:] = [audit_handler]
    audit.propagate = False


def load_policy(config: str | None) -> tuple[ContainersProxyConfig, Policy]:
    """The policy from `--config`, or the bundled block-everything default."""
    if config is None:
        cfg = parse_config_text(DEFAULT_POLICY, "<bundled default policy>")
    else:
        cfg = load_config(config)
    return cfg, Policy.from_config(cfg, os.environ)


def redirect_hint(cfg: ContainersProxyConfig, port: int) -> str:
    """An iptables command that sends one group's TCP to the proxy (never the proxy's own)."""
    ports = cfg.transparent_ports
    if ports.is_all:
        match = ""
    else:
        spec = ",".join(f"{lo}:{hi}" if lo != hi else str(lo) for lo, hi in ports.ranges())
        match = f" -m multiport --dports {spec}" if spec else ""
    return (
        "iptables -t nat -A OUTPUT -p tcp -m owner --gid-owner GID ! -d 127.0.0.0/8"
        f"{match} -j REDIRECT --to-ports {port}"
    )


def cmd_run(args: argparse.Namespace) -> int:
    import uvloop

    from proxy.server import DEFAULT_LISTEN, RunSettings, serve
    from proxy.workers import run_workers

    _setup_logging(args.log_level, args.log_format == "json")
    try:
        cfg, policy = load_policy(args.config)
    except ConfigError as exc:
        print(f"airgap-proxy: {exc}", file=sys.stderr)
        return 2
    for warning in policy.warnings:
        log.warning("%s", warning)
    try:
        listen = [parse_hostport(x) for x in args.listen] if args.listen else list(DEFAULT_LISTEN)
    except ValueError as exc:
        print(f"airgap-proxy: --listen {exc}", file=sys.stderr)
        return 2
    settings = RunSettings(
        listen=listen,
        listen_is_default=not args.listen,
        peek_timeout=args.peek_timeout,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        drain_timeout=args.drain_timeout,
        max_connections=args.max_connections or default_max_connections(),
        mark=args.mark,
        ca_bundle=args.ca_bundle,
        json_logs=args.log_format == "json",
        reuse_port=args.workers > 1,
    )
    source = args.config or "the bundled default policy (block all external access)"
    log.info("policy: %s", source)
    log.info("send a group's traffic here with: %s", redirect_hint(cfg, listen[0][1]))
    if args.workers > 1:
        log.info("starting %d workers", args.workers)

    def worker(_index: int) -> int:
        return uvloop.run(serve(settings, policy.decide, policy.transparent_ports))

    return run_workers(args.workers, worker)


def cmd_explain(args: argparse.Namespace) -> int:
    from rules.explain import explain

    try:
        _cfg, policy = load_policy(args.config)
        decision = explain(policy, args.dest, args.ip)
    except (ConfigError, ValueError) as exc:
        print(f"airgap-proxy explain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(decision.to_json()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airgap-proxy", description="Transparent egress proxy for containers."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the transparent proxy")
    run.add_argument("--config", help="admin-settings.json (default: bundled block-all policy)")
    run.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="repeatable; default 127.0.0.1:15001 and [::1]:15001",
    )
    run.add_argument("--peek-timeout", type=_positive, default=2.0, metavar="SECONDS")
    run.add_argument("--connect-timeout", type=_positive, default=10.0, metavar="SECONDS")
    run.add_argument("--idle-timeout", type=_positive, default=600.0, metavar="SECONDS")
    run.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS")
    run.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="default: (file-descriptor limit - 64) / 2, each relay holding two",
    )
    run.add_argument(
        "--mark",
        type=_mark,
        help="SO_MARK for the proxy's own upstream sockets (needs CAP_NET_ADMIN)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes sharing the listeners via SO_REUSEPORT (default: CPUs)",
    )
    run.add_argument("--ca-bundle", help="CA file for proxies reached over TLS (HTTPS h:p)")
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.set_defaults(func=cmd_run)

    explain = sub.add_parser("explain", help="print the decision for one destination as JSON")
    explain.add_argument("--config", help="admin-settings.json (default: bundled policy)")
    explain.add_argument("dest", metavar="DEST", help="host:port, ip:port or [v6]:port")
    explain.add_argument("--ip", help="the destination IP the container connected to")
    explain.set_defaults(func=cmd_explain)

    firewall = sub.add_parser("iptables", help="generate, apply or remove the redirect rules")
    try:
        from proxy import firewall as firewall_cmd
    except ImportError:  # pragma: no cover - only while the module is being written
        firewall.set_defaults(func=lambda _a: 2)
    else:
        firewall_cmd.add_arguments(firewall)
        firewall.set_defaults(func=firewall_cmd.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
