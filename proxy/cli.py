"""The `airgap-proxy` command: `run`, `explain`, `iptables`.

This is the only place that composes `rules/`, `pac/` and `proxy/` (design.md).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import math
import os
import resource
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rules.config import ConfigError, ContainersProxyConfig, load_config, parse_config_text
from rules.model import Decision
from rules.policy import Policy

if TYPE_CHECKING:
    from proxy.runtime import PacOptions

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


#: Descriptors kept back for listeners, logs, PAC pipes and the like.
RESERVED_FDS = 64
#: Descriptors one relayed connection holds: its two sockets (default relay).
FDS_PER_CONNECTION = 2


#: Threads for name lookups per process (libuv's pool; it allows up to 1024).
LOOKUP_THREADS = 64


def _fd_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 65536 if soft == resource.RLIM_INFINITY else soft


def default_max_connections(fds_per_connection: int = FDS_PER_CONNECTION) -> int:
    """As many connections as the descriptor limit allows, a few kept for listeners and logs.

    A spliced connection (`--splice`) holds six descriptors (two sockets, two pipes)
    instead of two, so the same limit allows a third as many.
    """
    return max(1, (_fd_limit() - RESERVED_FDS) // fds_per_connection)


def max_connections(requested: int, splice: bool) -> int:
    """`--max-connections`, or its default; ValueError when the descriptor limit cannot hold it.

    An explicit value the limit cannot hold is refused rather than capped: every connection
    past the limit would fail at accept or set-up (fail loud, at start-up).
    """
    from proxy.splice_relay import FDS_PER_CONNECTION as SPLICE_FDS

    per_connection = SPLICE_FDS if splice else FDS_PER_CONNECTION
    allowed = default_max_connections(per_connection)
    if requested <= 0:
        return allowed
    if requested > allowed:
        relay = " with --splice" if splice else ""
        remedy = (
            "raise the limit, lower the value, or drop --splice"
            if splice
            else ("raise the limit or lower the value")
        )
        raise ValueError(
            f"--max-connections {requested}{relay} needs {per_connection} descriptors"
            f" per connection plus {RESERVED_FDS}, but the limit is {_fd_limit()} (ulimit -n):"
            f" at most {allowed}; {remedy}"
        )
    return requested


def _seconds(minimum: float, inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: a number of seconds of at least (or above) `minimum`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum or (not inclusive and value == minimum) or value != value:
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {minimum:g}")
        if value == math.inf:  # a bound that never ends is no bound: fail closed, say so
            raise argparse.ArgumentTypeError("must be a finite number of seconds")
        return value

    return parse


_positive = _seconds(0, inclusive=False)
_at_least_one = _seconds(1)
_nonnegative = _seconds(0)


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (a zero or negative count
    would otherwise turn a bound off or a pool empty without a word)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}")
        return value

    return parse


def _mark(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError("must be 0..0xffffffff (0: no mark)")
    return value


def can_mark(mark: int) -> bool:
    """Whether this process may set SO_MARK (CAP_NET_ADMIN, or CAP_NET_RAW on Linux 5.17+)."""
    with socket.socket() as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        except OSError:
            return False
    return True


def resolve_mark(requested: int | None) -> int | None:
    """The mark the proxy's own sockets carry.

    By default the one `airgap-proxy iptables` exempts (0x4147), when this process may set
    it: so the default rules never loop the proxy into itself. An explicit mark that cannot
    be set is an error (ValueError); `--mark 0` turns marking off.
    """
    from rules.firewall import DEFAULT_MARK

    if requested == 0:
        return None
    if requested is None:
        if can_mark(DEFAULT_MARK):
            return DEFAULT_MARK
        log.warning(
            "cannot set SO_MARK (no CAP_NET_ADMIN): exempt the proxy from redirection by uid "
            "(airgap-proxy iptables --proxy-uid), or its own connections would loop into it"
        )
        return None
    if not can_mark(requested):
        raise ValueError(f"--mark {requested:#x}: cannot set SO_MARK (needs CAP_NET_ADMIN)")
    return requested


#: Control characters (C0, DEL, C1) and Unicode line breaks, as `\xNN`/`\uNNNN` escapes.
_LOG_ESCAPES = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


class OneLineFormatter(logging.Formatter):
    """A formatter whose message is always one line of printable text.

    Messages quote text from hostile sources (a PAC script's error, an upstream's reply, a
    client's bytes): a newline or an escape sequence in them could forge log lines or drive
    the operator's terminal. A traceback, added after the message, keeps its lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_LOG_ESCAPES)


def _setup_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    audit = logging.getLogger("airgap.conn")
    audit_handler = logging.StreamHandler(sys.stderr)
    audit_handler.setFormatter(
        OneLineFormatter("%(message)s" if json_logs else "%(asctime)s conn %(message)s")
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


def pac_options(args: argparse.Namespace) -> PacOptions:
    """The `--pac-*` options as the runtime takes them."""
    from pac.sandbox import Limits
    from proxy.pac_source import PacSettings
    from proxy.runtime import PacOptions, pac_ssl_context

    return PacOptions(
        source=PacSettings(
            refresh=args.pac_refresh,
            timeout=args.pac_timeout,
            retry_max=args.pac_retry_max,
            stale_grace=args.pac_stale_grace,
            max_bytes=args.pac_max_bytes,
            ssl_context=pac_ssl_context(args.ca_bundle),
            mark=getattr(args, "mark", None),
        ),
        limits=Limits(
            time=args.pac_eval_timeout,
            memory=args.pac_memory_mib << 20,
            script_bytes=args.pac_max_bytes,
        ),
        engine=args.pac_engine,
        evaluators=getattr(args, "pac_evaluators", 2),
        max_queue=getattr(args, "pac_queue", 256),
    )


def cmd_run(args: argparse.Namespace) -> int:
    import uvloop

    from proxy.runtime import run_supervisor, run_worker
    from proxy.server import DEFAULT_LISTEN, RunSettings
    from proxy.workers import CONTROL_FD_ENV

    _setup_logging(args.log_level, args.log_format == "json")
    control = os.environ.pop(CONTROL_FD_ENV, None)
    control_fd = int(control) if control and control.isdigit() else None
    try:
        cfg, policy = load_policy(args.config)
    except ConfigError as exc:
        print(f"airgap-proxy: {exc}", file=sys.stderr)
        return 2
    try:
        listen = [parse_hostport(x) for x in args.listen] if args.listen else list(DEFAULT_LISTEN)
    except ValueError as exc:
        print(f"airgap-proxy: --listen {exc}", file=sys.stderr)
        return 2
    try:
        args.mark = resolve_mark(args.mark)
    except ValueError as exc:
        print(f"airgap-proxy: {exc}", file=sys.stderr)
        return 2
    if args.splice:
        from proxy.splice_relay import unavailable

        why = unavailable()
        if why is not None:
            print(f"airgap-proxy: --splice: {why}", file=sys.stderr)
            return 2
    try:
        limit = max_connections(args.max_connections, args.splice)
    except ValueError as exc:
        print(f"airgap-proxy: {exc}", file=sys.stderr)
        return 2
    try:
        pac = pac_options(args)
    except ValueError as exc:
        print(f"airgap-proxy: {exc}", file=sys.stderr)
        return 2
    workers = 1 if control_fd is not None else max(1, args.workers)
    # Name lookups (`getaddrinfo`) each block a thread of libuv's pool for as long as the
    # host's resolver takes; with libuv's default of 4, a client sending a few names whose
    # DNS servers never answer would delay every other connection's lookup. Read by libuv
    # at its first lookup, inherited by the workers; an explicit setting is kept.
    os.environ.setdefault("UV_THREADPOOL_SIZE", str(LOOKUP_THREADS))
    if control_fd is None:  # say it once, not once per worker
        for warning in policy.warnings:
            log.warning("%s", warning)
        source = args.config or "the bundled default policy (block all external access)"
        log.info("policy: %s", source)
        log.info(
            "send one group's traffic here (GID: that group's id; the proxy runs in another"
            " group, so it cannot loop): %s",
            redirect_hint(cfg, listen[0][1]),
        )
        log.info("or review the full rule set with: airgap-proxy iptables show --config FILE")
    if workers > 1:
        log.info("starting %d workers", workers)
        argv = [*sys.argv[1:], "--workers", "1"]
        return uvloop.run(run_supervisor(workers, argv, cfg, policy, pac, args.drain_timeout))
    settings = RunSettings(
        listen=listen,
        listen_is_default=not args.listen,
        peek_timeout=args.peek_timeout,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        drain_timeout=args.drain_timeout,
        max_connections=limit,
        mark=args.mark,
        ca_bundle=args.ca_bundle,
        json_logs=args.log_format == "json",
        reuse_port=control_fd is not None,
        bad_proxy_ttl=args.bad_proxy_ttl,
        splice=args.splice,
    )
    return uvloop.run(run_worker(settings, cfg, policy, pac, control_fd))


async def _explain_with_pac(
    cfg: ContainersProxyConfig, policy: Policy, pac: PacOptions, dest_text: str, ip: str | None
) -> Decision:
    """Fetch the PAC once, as the proxy does, and decide DEST with it."""
    from proxy.pac_decider import PacDecider
    from proxy.resolver import NameResolver
    from proxy.runtime import make_source
    from rules.explain import explain_destination, with_note

    dest, note = explain_destination(policy, dest_text, ip)
    decider = PacDecider(NameResolver(), pac.limits, pac.engine, evaluators=1)
    try:
        source = make_source(cfg, pac, decider.set_snapshot)
        if source.inline is not None:
            await source.run()
        else:
            await source.refresh_once()
            await source.close()
        decision = policy.with_pac_decider(decider.decide).decide(dest)
        if inspect.isawaitable(decision):
            decision = await decision
        return with_note(decision, note)
    finally:
        await decider.aclose()


def cmd_explain(args: argparse.Namespace) -> int:
    from rules.explain import explain

    logging.basicConfig(level=logging.WARNING, format="airgap-proxy explain: %(message)s")
    try:
        cfg, policy = load_policy(args.config)
        if policy.uses_pac:
            pac = pac_options(args)
            decision = asyncio.run(_explain_with_pac(cfg, policy, pac, args.dest, args.ip))
        else:
            decision = explain(policy, args.dest, args.ip)
    except (ConfigError, ValueError) as exc:
        print(f"airgap-proxy explain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(decision.to_json()))
    return 0


def add_pac_arguments(parser: argparse.ArgumentParser) -> None:
    """PAC options shared by `run` and `explain` (they fetch and evaluate the same way)."""
    group = parser.add_argument_group("PAC")
    group.add_argument("--pac-refresh", type=_at_least_one, default=300.0, metavar="SECONDS")
    group.add_argument("--pac-timeout", type=_positive, default=10.0, metavar="SECONDS")
    group.add_argument("--pac-retry-max", type=_at_least_one, default=60.0, metavar="SECONDS")
    group.add_argument(
        "--pac-stale-grace",
        type=_nonnegative,
        default=0.0,
        metavar="SECONDS",
        help="keep the last good script this long after downloads fail "
        "(default 0: fail closed at once)",
    )
    group.add_argument("--pac-max-bytes", type=_count(1), default=1 << 20, metavar="BYTES")
    group.add_argument("--pac-eval-timeout", type=_positive, default=1.0, metavar="SECONDS")
    group.add_argument("--pac-memory-mib", type=_count(16), default=256, metavar="MIB")
    group.add_argument("--pac-engine", choices=("pacparser", "dukpy"), default="pacparser")


def _version() -> str:
    """The installed distribution's version (a checkout run without installing has none)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("airgap-proxy")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airgap-proxy", description="Transparent egress proxy for containers."
    )
    parser.add_argument("--version", action="version", version=f"airgap-proxy {_version()}")
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
    run.add_argument("--drain-timeout", type=_nonnegative, default=30.0, metavar="SECONDS")
    run.add_argument(
        "--max-connections",
        type=_count(0),
        default=0,
        help="default: (file-descriptor limit - 64) / 2, each relay holding two; "
        "/ 6 under --splice; a higher explicit value is refused",
    )
    run.add_argument(
        "--splice",
        action="store_true",
        help="relay with os.splice (Linux): the payload stays in the kernel; 6 descriptors "
        "per connection instead of 2; TLS upstreams keep the default relay",
    )
    run.add_argument(
        "--mark",
        type=_mark,
        help="SO_MARK for the proxy's own sockets, which the redirect rules exempt "
        "(default 0x4147 when CAP_NET_ADMIN allows it, as `iptables` expects; 0: none)",
    )
    run.add_argument(
        "--workers",
        type=_count(1),
        default=os.cpu_count() or 1,
        help="worker processes sharing the listeners via SO_REUSEPORT (default: CPUs)",
    )
    run.add_argument("--ca-bundle", help="CA file for proxies reached over TLS (HTTPS h:p)")
    add_pac_arguments(run)
    run.add_argument(
        "--pac-evaluators",
        type=_count(1),
        default=2,
        metavar="N",
        help="PAC engine processes per worker (default 2)",
    )
    run.add_argument(
        "--pac-queue",
        type=_count(1),
        default=256,
        metavar="N",
        help="PAC evaluations that may wait (beyond: REJECT, PAC overloaded)",
    )
    run.add_argument(
        "--bad-proxy-ttl",
        type=_nonnegative,
        default=300.0,
        metavar="SECONDS",
        help="how long a failed proxy is tried last (default 300)",
    )
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.set_defaults(func=cmd_run)

    explain = sub.add_parser("explain", help="print the decision for one destination as JSON")
    explain.add_argument("--config", help="admin-settings.json (default: bundled policy)")
    explain.add_argument("dest", metavar="DEST", help="host:port, ip:port or [v6]:port")
    explain.add_argument("--ip", help="the destination IP the container connected to")
    explain.add_argument("--ca-bundle", help="CA file for an https PAC URL")
    add_pac_arguments(explain)
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
