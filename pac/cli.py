"""`pac-eval`: evaluate a PAC file the way the container proxy will.

    pac-eval [options] PAC TARGET...
    pac-eval [options] PAC --urls FILE      (FILE or '-': one "TARGET [HOST]" per line)

Exit status: 0 ok; 1 an --expect did not hold; 2 bad usage, unreadable or unfetchable PAC,
a script that does not load (syntax error, no FindProxyForURL); 3 an evaluation failed
(exception, non-string result, timeout...). Results go to stdout, one line per target in
input order; everything else (notes, alerts, explanations, errors) to stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import socket
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from pac.engine import ENGINES, PacLoadError
from pac.env import PacEnv, canonical_addresses
from pac.lint import lint
from pac.loader import DEFAULT_FETCH_TIMEOUT, PacSourceError, read_pac
from pac.result import EvalResult
from pac.routes import parse_pac_result
from pac.sandbox import DEFAULT_ENGINE, DEFAULT_MAX_BYTES, Limits, PacSandbox
from pac.target import Target, TargetError, parse_target

EXIT_OK, EXIT_EXPECT, EXIT_USAGE, EXIT_EVAL = 0, 1, 2, 3
#: Bound on one real DNS lookup when DNS is not hermetic.
DNS_TIMEOUT = 5.0


class UsageError(Exception):
    """Bad command line or input file: exit status 2."""


def _escape(text: str) -> str:
    """`text` with every unprintable character (C0/C1 controls, DEL, bidi and other format
    characters, line separators) as a Python escape (`\\x1b`, `\\n`): a hostile script must
    not drive the developer's terminal (escape sequences) or split a target's line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Escaping:
    """A text stream that escapes unprintable characters in what it is given, except the
    newline that ends a write (every message of ours is written as one line)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        body, nl = (text[:-1], "\n") if text.endswith("\n") else (text, "")
        return self.stream.write(_escape(body) + nl)

    def flush(self) -> None:
        self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pac-eval",
        description="Evaluate FindProxyForURL as the container proxy calls it.",
    )
    p.add_argument("pac", metavar="PAC", help="path, file:// or http(s):// URL, or - for stdin")
    p.add_argument("targets", metavar="TARGET", nargs="*", help="host:port, [v6]:port or a URL")
    p.add_argument(
        "--urls", metavar="FILE", help="read 'TARGET [HOST]' lines from FILE ('-': stdin)"
    )
    p.add_argument("--host", help="override the host argument for every target")
    p.add_argument("--raw-url", action="store_true", help="pass URLs verbatim, path included")
    p.add_argument(
        "--resolve",
        metavar="NAME=IP",
        action="append",
        default=[],
        help="DNS answer (repeatable, also per name for several addresses); makes DNS hermetic",
    )
    p.add_argument("--no-dns", action="store_true", help="hermetic DNS with an empty table")
    p.add_argument("--my-ip", metavar="IP", action="append", default=[], help="myIpAddress()")
    p.add_argument("--now", metavar="ISO-8601", help="the clock (naive times are UTC)")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE)
    p.add_argument("--json", action="store_true", help="one JSON object per target and line")
    p.add_argument("--explain", action="store_true", help="inputs, routes and lint on stderr")
    p.add_argument("--expect", metavar="RESULT", help="exit 1 unless every result is RESULT")
    p.add_argument("--lint", action="store_true", help="only lint the script")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per evaluation")
    p.add_argument(
        "--pac-max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest PAC accepted"
    )
    p.add_argument("--fetch-timeout", type=float, default=DEFAULT_FETCH_TIMEOUT)
    return p


def _system_resolver(name: str) -> list[str]:
    """Real DNS for a non-hermetic run, in resolver order, bounded by DNS_TIMEOUT."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(socket.getaddrinfo, name, None, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=DNS_TIMEOUT)
        except (concurrent.futures.TimeoutError, OSError):
            return []
    return [str(info[4][0]) for info in infos]


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--now: not an ISO-8601 time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def build_env(args: argparse.Namespace) -> PacEnv:
    """--resolve / --no-dns / --my-ip / --now as a PacEnv."""
    table: dict[str, list[str]] = {}
    for item in args.resolve:
        name, sep, ip = item.partition("=")
        if not sep or not name or not canonical_addresses(ip):
            raise UsageError(f"--resolve: expected NAME=IP, got {item!r}")
        table.setdefault(name, []).append(ip)
    for ip in args.my_ip:
        if not canonical_addresses(ip):
            raise UsageError(f"--my-ip: not an IP address: {ip!r}")
    hermetic = bool(args.resolve) or args.no_dns
    return PacEnv(
        dns=table,
        resolver=None if hermetic else _system_resolver,
        my_ip=tuple(args.my_ip),
        now=_parse_now(args.now),
    )


def _target_lines(args: argparse.Namespace, stdin: TextIO) -> Iterator[tuple[str, str, str | None]]:
    """(where, TARGET, HOST-or-None) from the command line and --urls."""
    for t in args.targets:
        yield "argument", t, None
    if args.urls:
        if args.urls == "-":
            lines: Iterator[str] = iter(stdin)
        else:
            try:
                with open(args.urls, encoding="utf-8") as f:
                    lines = iter(f.readlines())
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"--urls: cannot read {args.urls}: {exc}") from None
        for number, line in enumerate(lines, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) > 2:
                raise UsageError(f"--urls line {number}: expected 'TARGET [HOST]'")
            yield f"--urls line {number}", fields[0], fields[1] if len(fields) == 2 else None


def build_targets(args: argparse.Namespace, stdin: TextIO) -> list[Target]:
    """Every target, normalised as the proxy would; UsageError on the first bad one."""
    targets: list[Target] = []
    for where, text, host in _target_lines(args, stdin):
        try:
            target = parse_target(text, raw_url=args.raw_url)
        except TargetError as exc:
            raise UsageError(f"{where}: {exc}") from None
        override = host or args.host
        if override is not None:
            if any(ord(c) < 32 or ord(c) == 127 for c in override):
                raise UsageError(f"{where}: host contains control characters")
            target = Target(target.url, override, target.note)
        targets.append(target)
    return targets


def _warnings(target: Target, result: EvalResult) -> list[str]:
    out = [target.note] if target.note else []
    if result.result is not None:
        for d in parse_pac_result(result.result).dropped:
            out.append(f"entry {d.entry!r} dropped: {d.reason}")
    return out


def _json_line(target: Target, result: EvalResult) -> str:
    parsed = parse_pac_result(result.result) if result.result is not None else None
    verdict = result.verdict()
    obj: dict[str, Any] = {
        "url": target.url,
        "host": target.host,
        "result": result.result,
        "error": result.error.to_json() if result.error else None,
        "routes": [r.pac_spelling() for r in parsed.routes] if parsed else [],
        "warnings": _warnings(target, result),
        "decision": {
            "routes": [r.pac_spelling() for r in verdict.routes],
            "rejected": verdict.rejected,
            "reason": verdict.reason,
        },
        "reads": result.reads.to_json(),
        "alerts": list(result.alerts),
    }
    return json.dumps(obj)


def _explain(target: Target, result: EvalResult, err: TextIO) -> None:
    err.write(f"pac-eval: FindProxyForURL({target.url!r}, {target.host!r})\n")
    if result.result is not None:
        parsed = parse_pac_result(result.result)
        for route in parsed.chromium_routes:
            err.write(f"  route: {route}\n")
        for d in parsed.dropped:
            err.write(f"  dropped: {d.entry!r} ({d.reason})\n")
    verdict = result.verdict()
    err.write(f"  proxy decision: {'REJECT after routes' if verdict.rejected else 'routes'}")
    err.write(f" [{'; '.join(map(str, verdict.routes))}] - {verdict.reason}\n")
    reads = result.reads
    for name, addrs in reads.dns:
        err.write(f"  dns: {name} -> {', '.join(addrs) or '(does not resolve)'}\n")
    if reads.clock or reads.my_ip or reads.random:
        flags = [
            f
            for f, on in (("clock", reads.clock), ("my_ip", reads.my_ip), ("random", reads.random))
            if on
        ]
        err.write(f"  read: {', '.join(flags)}\n")


def _describe_env(args: argparse.Namespace, env: PacEnv, err: TextIO) -> None:
    dns = "real DNS" if env.resolver else f"hermetic table {dict(env.dns) or '{}'}"
    now = env.now.isoformat() if env.now else "the real clock"
    err.write(
        f"pac-eval: engine {args.engine}; {dns}; my_ip {list(env.my_ip) or '(none: 127.0.0.1)'};"
        f" now {now}\n"
    )


def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """Everything after argument parsing; returns the exit status."""
    out, err = _Escaping(out), _Escaping(err)  # type: ignore[assignment]
    try:
        script = read_pac(args.pac, args.pac_max_bytes, args.fetch_timeout, stdin=stdin.buffer)
    except PacSourceError as exc:
        err.write(f"pac-eval: cannot read the PAC: {exc}\n")
        return EXIT_USAGE
    limits = Limits(time=args.timeout, script_bytes=args.pac_max_bytes)
    try:
        sandbox = PacSandbox(script, args.engine, limits).start()
    except PacLoadError as exc:
        err.write(f"pac-eval: the PAC does not load: {exc.error}\n")
        return EXIT_USAGE
    with sandbox:
        findings = lint(script)
        if args.lint:
            for w in findings:
                out.write(f"{w}\n")
            return EXIT_OK
        env = build_env(args)
        targets = build_targets(args, stdin)
        if not targets:
            raise UsageError("no TARGET given (arguments or --urls)")
        if args.explain:
            _describe_env(args, env, err)
            for w in findings:
                err.write(f"pac-eval: lint: {w}\n")
        failed = mismatched = 0
        results = sandbox.evaluate_many(((t.url, t.host) for t in targets), env)
        for target, result in zip(targets, results, strict=True):
            if target.note and not args.json:
                err.write(f"pac-eval: note: {target.note}\n")
            for alert in result.alerts:
                err.write(f"pac-eval: alert: {alert}\n")
            if args.json:
                out.write(_json_line(target, result) + "\n")
            elif result.error is not None:
                out.write(f"ERROR {result.error}\n")
            else:
                out.write(f"{result.result}\n")
            if args.explain:
                _explain(target, result, err)
            if result.error is not None:
                failed += 1
                err.write(f"pac-eval: {target.url}: evaluation failed: {result.error}\n")
            elif args.expect is not None and result.result != args.expect:
                mismatched += 1
                err.write(
                    f"pac-eval: {target.url}: expected {args.expect!r}, got {result.result!r}\n"
                )
        if failed:
            err.write(f"pac-eval: {failed} of {len(targets)} evaluations failed\n")
            return EXIT_EVAL
        return EXIT_EXPECT if mismatched else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (`pac-eval`)."""
    args = _parser().parse_args(argv)
    if args.pac == "-" and args.urls == "-":
        print("pac-eval: PAC and --urls cannot both be stdin", file=sys.stderr)
        return EXIT_USAGE
    if not all(0 < v < math.inf for v in (args.timeout, args.fetch_timeout, args.pac_max_bytes)):
        print(
            "pac-eval: --timeout, --fetch-timeout and --pac-max-bytes must be positive and finite",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return run(args, sys.stdout, sys.stderr, sys.stdin)
    except UsageError as exc:
        print(f"pac-eval: {_escape(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
