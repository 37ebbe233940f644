"""The `airgap-proxy` command: `run`, `explain`, `iptables`.

This is the only place that composes `rules/`, `pac/` and `proxy/`; nothing imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import math
import os
import resource
import shlex
import signal
import socket
import sys
from collections.abc import Callable, Sequence

import uvloop

from pac import addr, installed_version
from proxy import audit
from proxy import firewall_apply as firewall_cmd
from proxy.config import DEFAULT_LISTEN, DEFAULTS, PacConfig, RunConfig
from proxy.control import CONTROL_FD_ENV, REPORT_FD_ENV
from proxy.explain import run_explain, run_explain_explicit
from proxy.launch import PacOptions, pac_ssl_context, run_supervisor, run_worker
from proxy.pac_source import PacSettings
from proxy.reload import ConfigVersion, read_version, text_version
from proxy.splice_relay import FDS_PER_CONNECTION as SPLICE_FDS
from proxy.splice_relay import unavailable as splice_unavailable
from rules.config import ConfigError, ContainersProxyConfig, load_config, parse_config_text
from rules.explain import parse_resolve
from rules.policy import Policy
from rules.redirect_rules import DEFAULT_MARK, DEFAULT_PROXY_PORT

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
    try:
        return addr.parse_hostport(text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None


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


def transparent_listeners(values: Sequence[str] | None) -> tuple[tuple[str, int], ...]:
    """`--listen`: the default pair when absent, none for `--listen none` (an explicit-only
    proxy, which needs no root), else the addresses; UsageError when one is malformed."""
    if not values:
        return DEFAULT_LISTEN
    if [v.strip().lower() for v in values] == ["none"]:
        return ()
    try:
        return tuple(parse_hostport(x) for x in values)
    except ValueError as exc:
        raise UsageError(f"--listen {exc}") from None


def exposure_warnings(explicit: Sequence[tuple[str, int]]) -> list[str]:
    """A warning per explicit listener that is not on a loopback address: every host that
    can reach it can use the proxy (it has no authentication)."""
    out = []
    for host, port in explicit:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            out.append(
                f"--explicit-listen {addr.format_hostport(host, port)} is not a loopback"
                " address: every host that can reach it can use this proxy"
            )
    return out


def resolve_mark(requested: int | None, warn: bool = True) -> int | None:
    """The mark the proxy's own sockets carry.

    By default the one `airgap-proxy iptables` exempts (0x4147), when this process may set
    it: so the default rules never loop the proxy into itself. An explicit mark that cannot
    be set is an error (ValueError); `--mark 0` turns marking off.
    """
    if requested == 0:
        return None
    if requested is None:
        if can_mark(DEFAULT_MARK):
            return DEFAULT_MARK
        if not warn:  # explicit-only: no redirect rules, nothing can loop
            return None
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


def load_version(config: str | None) -> tuple[ConfigVersion, Policy]:
    """The policy file's validated version (what a reload compares with), and its policy."""
    if config is None:
        version = text_version(DEFAULT_POLICY, "<bundled default policy>")
    else:
        version = read_version(config)
    return version, Policy.from_config(version.cfg, os.environ)


def redirect_hint(
    config: str | None, cfg: ContainersProxyConfig, port: int, mark: int | None
) -> str:
    """The `airgap-proxy iptables apply` command that fits this run (IPv4 and IPv6, the
    proxy's own traffic exempt, the leak guard on): the rule set to use, not a hand-written
    one that would miss IPv6, the guard or the proxy's exemption."""
    if config is not None:
        words = ["--config", shlex.quote(config)]
    else:
        ports = cfg.transparent_ports
        spec = (
            "*"
            if ports.is_all
            else ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ports.ranges())
        )
        words = ["--transparent-ports", shlex.quote(spec)]
    if port != DEFAULT_PROXY_PORT:
        words += ["--proxy-port", str(port)]
    if mark is None:
        words += ["--proxy-uid", str(os.getuid())]
    elif mark != DEFAULT_MARK:
        words += ["--mark", hex(mark)]
    return " ".join(["airgap-proxy iptables apply", *words, "--block-unredirected"])


class UsageError(Exception):
    """An option that is wrong, or that this machine cannot honour: one line, exit status 2."""


def pac_config(args: argparse.Namespace) -> PacConfig:
    """The `--pac-*` options (`explain` has no evaluator pool options: it evaluates once)."""
    return PacConfig(
        refresh=args.pac_refresh,
        fetch_timeout=args.pac_timeout,
        retry_max=args.pac_retry_max,
        stale_grace=args.pac_stale_grace,
        max_bytes=args.pac_max_bytes,
        eval_timeout=args.pac_eval_timeout,
        memory_mib=args.pac_memory_mib,
        engine=args.pac_engine,
        evaluators=getattr(args, "pac_evaluators", DEFAULTS.pac.evaluators),
        queue=getattr(args, "pac_queue", DEFAULTS.pac.queue),
    )


def pac_options(pac: PacConfig, ca_bundle: str | None, mark: int | None) -> PacOptions:
    """The PAC machinery's settings, with the TLS context PAC downloads are verified with."""
    try:
        ssl_context = pac_ssl_context(ca_bundle)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return PacOptions(
        source=PacSettings(
            refresh=pac.refresh,
            timeout=pac.fetch_timeout,
            retry_max=pac.retry_max,
            stale_grace=pac.stale_grace,
            max_bytes=pac.max_bytes,
            ssl_context=ssl_context,
            mark=mark,
        ),
        limits=pac.limits(),
        engine=pac.engine,
        evaluators=pac.evaluators,
        max_queue=pac.queue,
    )


def run_config(args: argparse.Namespace, worker: bool) -> RunConfig:
    """`run`'s options, checked against this machine, as one `RunConfig` (or a UsageError).

    `worker`: this process is one worker of a supervisor, which shares its listeners.
    """
    listen = transparent_listeners(args.listen)
    try:
        explicit = tuple(parse_hostport(x) for x in args.explicit_listen or ())
    except ValueError as exc:
        raise UsageError(f"--explicit-listen {exc}") from None
    if not listen and not explicit:
        raise UsageError("--listen none needs at least one --explicit-listen HOST:PORT")
    try:
        admin_listen = parse_admin_listen(args.admin_listen)
    except ValueError as exc:
        raise UsageError(f"--admin-listen {exc}") from None
    try:
        mark = resolve_mark(args.mark, warn=bool(listen))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.splice:
        why = splice_unavailable()
        if why is not None:
            raise UsageError(f"--splice: {why}")
    try:
        limit = max_connections(args.max_connections, args.splice)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return RunConfig(
        config_path=args.config,
        shadow_config_path=args.shadow_config,
        audit_log=args.audit_log,
        listen=listen,
        explicit_listen=explicit,
        listen_is_default=not args.listen,
        peek_timeout=args.peek_timeout,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        drain_timeout=args.drain_timeout,
        max_connections=limit,
        splice=args.splice,
        mark=mark,
        workers=1 if worker else args.workers,
        ca_bundle=args.ca_bundle,
        bad_proxy_ttl=args.bad_proxy_ttl,
        log_format=args.log_format,
        log_level=args.log_level,
        reuse_port=worker,
        pac=pac_config(args),
        admin_listen=None if worker else admin_listen,
    )


def parse_admin_listen(text: str | None) -> tuple[str, int] | None:
    """`HOST:PORT`, `[v6]:PORT`, or `none` (no admin endpoint); default: `DEFAULTS`."""
    if text is None:
        return DEFAULTS.admin_listen
    if text.strip().lower() == "none":
        return None
    return parse_hostport(text)


def _fd_from_env(name: str) -> int | None:
    value = os.environ.pop(name, None)
    return int(value) if value and value.isascii() and value.isdigit() else None


def cmd_run(args: argparse.Namespace) -> int:
    # SIGHUP (reload) and SIGUSR1 (reopen the audit log) must never kill the proxy, also
    # before their handlers are installed: until then they are ignored (the file watch
    # still sees a changed policy).
    for signum in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    _setup_logging(args.log_level, args.log_format == "json")
    control_fd = _fd_from_env(CONTROL_FD_ENV)
    report_fd = _fd_from_env(REPORT_FD_ENV)
    try:
        config = run_config(args, worker=control_fd is not None)
        pac = pac_options(config.pac, config.ca_bundle, config.mark)
        audit.open_audit_file(config.audit_log)
    except UsageError as exc:
        print(f"airgap-proxy: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"airgap-proxy: --audit-log {args.audit_log}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    # Name lookups (`getaddrinfo`) each block a thread of libuv's pool for as long as the
    # host's resolver takes; with libuv's default of 4, a client sending a few names whose
    # DNS servers never answer would delay every other connection's lookup. Read by libuv
    # at its first lookup, inherited by the workers; an explicit setting is kept.
    os.environ.setdefault("UV_THREADPOOL_SIZE", str(LOOKUP_THREADS))
    if control_fd is not None:
        # A worker of a supervisor: its policy comes over the control pipe, never from the
        # file, which may have changed (or broken) since the supervisor read it.
        return uvloop.run(run_worker(config, pac, control_fd, None, None, report_fd))
    try:
        version, policy = load_version(args.config)
        cfg = version.cfg
        shadow = None
        if args.shadow_config is not None:
            shadow, _ = load_version(args.shadow_config)
    except ConfigError as exc:
        print(f"airgap-proxy: {exc}", file=sys.stderr)
        return 2
    for warning in policy.warnings:
        log.warning("%s", warning)
    source = args.config or "the bundled default policy (block all external access)"
    log.info("policy: %s (sha256 %s)", source, version.sha256[:16])
    if shadow is not None:
        log.info("shadow policy: %s (sha256 %s): decided beside, never enforced",
                 args.shadow_config, shadow.sha256[:16])  # fmt: skip
    for warning in exposure_warnings(config.explicit_listen):
        log.warning("%s", warning)
    if config.listen:
        log.info(
            "redirect rules (the sidecar entrypoint has applied them already; `show`"
            " instead of `apply` prints them): %s",
            redirect_hint(args.config, cfg, config.listen[0][1], config.mark),
        )
    if config.workers > 1:
        log.info("starting %d workers", config.workers)
        argv = [*sys.argv[1:], "--workers", "1"]
        return uvloop.run(run_supervisor(config, argv, pac, version, shadow))
    return uvloop.run(run_worker(config, pac, None, version, shadow))


def cmd_explain(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="airgap-proxy explain: %(message)s")
    try:
        cfg, policy = load_policy(args.config)
        table = parse_resolve(args.resolve) if args.resolve else None
        pac = pac_options(pac_config(args), args.ca_bundle, None) if policy.uses_pac else None
        if args.explicit and args.ip is not None:
            raise UsageError("--explicit takes no --ip: the proxy resolves the name itself")

        def decide(c: ContainersProxyConfig, p: Policy, o: PacOptions | None) -> dict[str, object]:
            if args.explicit:
                return asyncio.run(run_explain_explicit(c, p, o, args.dest, args.client, table))
            return asyncio.run(run_explain(c, p, o, args.dest, args.ip, args.client, table))

        out = decide(cfg, policy, pac)
        if args.shadow_config is not None:
            # The shadow decided as the proxy would, beside the enforced one (never instead).
            shadow_cfg, shadow_policy = load_policy(args.shadow_config)
            shadow_pac = (
                pac_options(pac_config(args), args.ca_bundle, None)
                if shadow_policy.uses_pac
                else None
            )
            out["shadow"] = decide(shadow_cfg, shadow_policy, shadow_pac)
    except (ConfigError, UsageError, ValueError) as exc:
        print(f"airgap-proxy explain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


def add_pac_arguments(parser: argparse.ArgumentParser) -> None:
    """PAC options shared by `run` and `explain` (they fetch and evaluate the same way)."""
    pac = DEFAULTS.pac
    group = parser.add_argument_group("PAC")
    group.add_argument("--pac-refresh", type=_at_least_one, default=pac.refresh, metavar="SECONDS")
    group.add_argument(
        "--pac-timeout", type=_positive, default=pac.fetch_timeout, metavar="SECONDS"
    )
    group.add_argument(
        "--pac-retry-max", type=_at_least_one, default=pac.retry_max, metavar="SECONDS"
    )
    group.add_argument(
        "--pac-stale-grace",
        type=_nonnegative,
        default=pac.stale_grace,
        metavar="SECONDS",
        help="keep the last good script this long after downloads fail "
        "(default 0: fail closed at once)",
    )
    group.add_argument("--pac-max-bytes", type=_count(1), default=pac.max_bytes, metavar="BYTES")
    group.add_argument(
        "--pac-eval-timeout", type=_positive, default=pac.eval_timeout, metavar="SECONDS"
    )
    group.add_argument("--pac-memory-mib", type=_count(16), default=pac.memory_mib, metavar="MIB")
    group.add_argument("--pac-engine", choices=("pacparser", "dukpy"), default=pac.engine)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airgap-proxy", description="Transparent egress proxy for containers."
    )
    parser.add_argument(
        "--version", action="version", version=f"airgap-proxy {installed_version()}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the transparent proxy")
    run.add_argument(
        "--config",
        help="admin-settings.json (default: bundled block-all policy); reloaded on SIGHUP "
        "and when it changes",
    )
    run.add_argument(
        "--shadow-config",
        metavar="FILE",
        help="a second admin-settings.json decided beside --config for every connection and "
        "never enforced: where they differ the audit line says what it would have done",
    )
    run.add_argument(
        "--audit-log",
        metavar="FILE",
        help="also append the audit lines to FILE as JSON lines (reopened on SIGUSR1)",
    )
    run.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="transparent listener, repeatable; default 127.0.0.1:15001 and [::1]:15001; "
        "'none' for an explicit-only proxy (needs no root: --listen none --explicit-listen "
        "127.0.0.1:3128)",
    )
    run.add_argument(
        "--explicit-listen",
        action="append",
        metavar="HOST:PORT",
        help="explicit HTTP proxy listener (CONNECT and http:// requests, for HTTP_PROXY / "
        "HTTPS_PROXY clients), repeatable; IPv6 as [addr]:port; off by default",
    )
    run.add_argument(
        "--peek-timeout", type=_positive, default=DEFAULTS.peek_timeout, metavar="SECONDS"
    )
    run.add_argument(
        "--connect-timeout", type=_positive, default=DEFAULTS.connect_timeout, metavar="SECONDS"
    )
    run.add_argument(
        "--idle-timeout", type=_positive, default=DEFAULTS.idle_timeout, metavar="SECONDS"
    )
    run.add_argument(
        "--drain-timeout", type=_nonnegative, default=DEFAULTS.drain_timeout, metavar="SECONDS"
    )
    run.add_argument(
        "--max-connections",
        type=_count(0),
        default=DEFAULTS.max_connections,
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
        default=DEFAULTS.workers,
        help="worker processes sharing the listeners via SO_REUSEPORT (default: CPUs)",
    )
    run.add_argument("--ca-bundle", help="CA file for proxies reached over TLS (HTTPS h:p)")
    admin_host, admin_port = DEFAULTS.admin_listen or ("none", 0)
    run.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        help=f"the admin endpoint: /healthz /readyz /status /metrics, read-only (default "
        f"{admin_host}:{admin_port}; `none`: off; a non-loopback address warns)",
    )
    add_pac_arguments(run)
    run.add_argument(
        "--pac-evaluators",
        type=_count(1),
        default=DEFAULTS.pac.evaluators,
        metavar="N",
        help=f"PAC engine processes per worker (default {DEFAULTS.pac.evaluators})",
    )
    run.add_argument(
        "--pac-queue",
        type=_count(1),
        default=DEFAULTS.pac.queue,
        metavar="N",
        help="PAC evaluations that may wait (beyond: REJECT, PAC overloaded)",
    )
    run.add_argument(
        "--bad-proxy-ttl",
        type=_nonnegative,
        default=DEFAULTS.bad_proxy_ttl,
        metavar="SECONDS",
        help=f"how long a failed proxy is tried last (default {DEFAULTS.bad_proxy_ttl:g})",
    )
    run.add_argument("--log-format", choices=("text", "json"), default=DEFAULTS.log_format)
    run.add_argument(
        "--log-level", default=DEFAULTS.log_level, choices=("debug", "info", "warning", "error")
    )
    run.set_defaults(func=cmd_run)

    explain = sub.add_parser("explain", help="print the decision for one destination as JSON")
    explain.add_argument("--config", help="admin-settings.json (default: bundled policy)")
    explain.add_argument(
        "--shadow-config",
        metavar="FILE",
        help="also decide with this admin-settings.json, as `run --shadow-config` does; "
        'its decision is under "shadow"',
    )
    explain.add_argument("dest", metavar="DEST", help="host:port, ip:port or [v6]:port")
    explain.add_argument("--ip", help="the destination IP the container connected to")
    explain.add_argument(
        "--explicit",
        action="store_true",
        help="decide as the explicit proxy listener would (a name on any port; the proxy "
        "resolves it)",
    )
    explain.add_argument(
        "--client",
        metavar="IP",
        help="the container's own address (what myIpAddress() answers in the proxy)",
    )
    explain.add_argument(
        "--resolve",
        metavar="NAME=IP",
        action="append",
        default=[],
        help="DNS answer for the name check and the PAC (repeatable, also several per "
        "name); makes DNS hermetic. Default: this machine's resolver",
    )
    explain.add_argument("--ca-bundle", help="CA file for an https PAC URL")
    add_pac_arguments(explain)
    explain.set_defaults(func=cmd_explain)

    firewall = sub.add_parser("iptables", help="generate, apply or remove the redirect rules")
    firewall_cmd.add_arguments(firewall)
    firewall.set_defaults(func=firewall_cmd.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
