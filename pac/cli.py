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
import dataclasses
import json
import math
import re
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

from pac import installed_version
from pac.engine import ENGINES, PacLoadError
from pac.env import PacEnv, canonical_addresses
from pac.lint import lint, load_hints
from pac.loader import DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_BYTES, PacSourceError, read_pac
from pac.lookups import HostPrefetch, Lookups, host_names, looks_like_ip
from pac.result import EvalResult
from pac.routes import ParsedResult, parse_pac_result
from pac.sandbox import CHUNK, DEFAULT_ENGINE, Limits, PacSandbox
from pac.target import Target, TargetError, parse_target

EXIT_OK, EXIT_EXPECT, EXIT_USAGE, EXIT_EVAL = 0, 1, 2, 3
#: Bound on one real DNS lookup when DNS is not hermetic.
DNS_TIMEOUT = 5.0
#: Ports on which the proxy learns a host name (HTTP Host on 80, TLS SNI on 443).
SNIFF_PORTS = (80, 443)
_CONTROL = re.compile("[\x00-\x1f\x7f]")

EPILOG = """\
defaults: --timeout 1 s per evaluation, --fetch-timeout 10 s for an http(s) PAC,
--pac-max-bytes 1 MiB, --engine pacparser, real DNS unless --resolve or --no-dns.
With several targets, each result line starts with the target and a TAB when stdout is a
terminal (--show-target always, --bare never).

exit status:
  0  every evaluation gave a result (and matched --expect)
  1  a result differed from --expect
  2  bad usage; a PAC that cannot be read, fetched or loaded (syntax error, no
     FindProxyForURL)
  3  at least one evaluation failed (exception, non-string result, timeout...)

examples:
  pac-eval proxy.pac www.example.com:443 10.1.2.3:22 --no-dns
  pac-eval https://wpad.corp.example/wpad.dat --urls targets.txt --show-target
"""


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
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action=_VersionAction)
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
    p.add_argument(
        "--engine", choices=ENGINES, default=DEFAULT_ENGINE, help="(default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per target and line")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--show-target", action="store_true", help="start each result line with TARGET<TAB>"
    )
    shown.add_argument("--bare", action="store_true", help="result lines only, even on a terminal")
    p.add_argument("--explain", action="store_true", help="inputs, routes and lint on stderr")
    p.add_argument("--expect", metavar="RESULT", help="exit 1 unless every result is RESULT")
    p.add_argument("--lint", action="store_true", help="only lint the script")
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=Limits().time,
        help="seconds per evaluation, also for loading (default: %(default)g)",
    )
    p.add_argument(
        "--pac-max-bytes",
        metavar="BYTES",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help="largest PAC accepted, in bytes (default: %(default)d)",
    )
    p.add_argument(
        "--fetch-timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_FETCH_TIMEOUT,
        help="seconds for the whole download of an http(s) PAC (default: %(default)g)",
    )
    return p


class _VersionAction(argparse.Action):
    """`--version`, reading the metadata only when asked (it costs a few ms at start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS)
        self.help = "print the version and exit"

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(f"pac-eval (airgap-proxy) {installed_version()}")
        parser.exit()


def _system_resolver(name: str) -> list[str]:
    """Real DNS for a non-hermetic run, in resolver order. Blocking: run through `Lookups`,
    which bounds each lookup by DNS_TIMEOUT in a daemon thread."""
    try:
        infos = socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
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


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One target: what the user wrote (the label of its output line) and the proxy's
    arguments it stands for."""

    label: str
    target: Target


def build_targets(args: argparse.Namespace, stdin: TextIO) -> list[Item]:
    """Every target, normalised as the proxy would; UsageError on the first bad one."""
    items: list[Item] = []
    for where, text, host in _target_lines(args, stdin):
        try:
            target = parse_target(text, raw_url=args.raw_url)
        except TargetError as exc:
            raise UsageError(f"{where}: {exc}") from None
        override = host or args.host
        if override is not None:
            if _CONTROL.search(override):
                raise UsageError(f"{where}: host contains control characters")
            target = Target(target.url, override, target.note)
        items.append(Item(f"{text} {host}" if host else text, target))
    return items


def _port(url: str) -> int | None:
    tail = url.rpartition(":")[2]
    if tail.isascii() and tail.isdigit():  # the proxy's spelling, scheme://host:port
        return int(tail)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    return port if port is not None else {"http": 80, "https": 443}.get(parts.scheme.lower())


def unseen_name_ports(items: Sequence[Item]) -> dict[int, list[Item]]:
    """Targets naming a host on a port where the proxy never learns the name (it sniffs
    names on ports 80 and 443 only), by port: the proxy decides those on the IP."""
    out: dict[int, list[Item]] = {}
    for item in items:
        if looks_like_ip(item.target.host):
            continue
        port = _port(item.target.url)
        if port is not None and port not in SNIFF_PORTS:
            out.setdefault(port, []).append(item)
    return out


def _port_note(port: int) -> str:
    return (
        f"the proxy never sees a host name on port {port} (names are sniffed on ports 80 and"
        f" 443 only): it decides on the destination IP, so evaluate IP:{port} for its answer"
    )


class _Parsed:
    """parse_pac_result, remembered per result text: a batch has few distinct results."""

    def __init__(self) -> None:
        self._seen: dict[str, ParsedResult] = {}

    def __call__(self, result: str) -> ParsedResult:
        parsed = self._seen.get(result)
        if parsed is None:
            if len(self._seen) >= 4096:
                self._seen.clear()
            parsed = self._seen[result] = parse_pac_result(result)
        return parsed


def _warnings(target: Target, result: EvalResult, extra: str | None = None) -> list[str]:
    out = [target.note] if target.note else []
    if extra:
        out.append(extra)
    if result.result is not None:
        for d in parse_pac_result(result.result).dropped:
            out.append(f"entry {d.entry!r} dropped: {d.reason}")
    return out


def _json_line(target: Target, result: EvalResult, note: str | None = None) -> str:
    parsed = parse_pac_result(result.result) if result.result is not None else None
    verdict = result.verdict()
    obj: dict[str, Any] = {
        "url": target.url,
        "host": target.host,
        "result": result.result,
        "error": result.error.to_json() if result.error else None,
        "routes": [r.pac_spelling() for r in parsed.routes] if parsed else [],
        "warnings": _warnings(target, result, note),
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


def evaluate_batch(
    sandbox: PacSandbox, script: str, items: Sequence[tuple[str, str]], env: PacEnv
) -> Iterator[EvalResult]:
    """Results for (url, host) pairs, in order. With real DNS, the next chunk's host names
    are looked up while a chunk is evaluated and handed to it as a table (see pac.lookups),
    so a script that resolves its host runs once per target, not twice with a lookup in
    between; hermetic DNS needs none of that."""
    if env.resolver is None:
        yield from sandbox.evaluate_many(items, env)
        return
    lookups = Lookups(env.resolver, DNS_TIMEOUT)
    env = dataclasses.replace(env, resolver=lookups.resolve)
    static = dict(env.dns)
    prefetch = HostPrefetch(script)
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    names = [host_names(host for _, host in chunk) for chunk in chunks[:2]]
    if prefetch.on and chunks:
        lookups.prefetch(names[0])
    for index, chunk in enumerate(chunks):
        if index + 2 < len(chunks):
            names.append(host_names(host for _, host in chunks[index + 2]))
        upcoming = names[index + 1] if index + 1 < len(names) else []
        table: dict[str, Any] = {}
        if prefetch.on:
            lookups.prefetch(upcoming)
            table = lookups.known(
                [n for n in names[index] if n not in static], time.monotonic() + DNS_TIMEOUT
            )
        chunk_env = dataclasses.replace(env, dns={**table, **static}) if table else env
        results = list(sandbox.evaluate_many(chunk, chunk_env))
        prefetch.observe(
            [host for _, host in chunk], [[n for n, _ in r.reads.dns] for r in results]
        )
        yield from results


def _load_failed(script: str, exc: PacLoadError, err: TextIO) -> int:
    err.write(f"pac-eval: the PAC does not load: {exc.error}\n")
    for hint in load_hints(script, exc.error):
        err.write(f"pac-eval: hint: {hint}\n")
    return EXIT_USAGE


def _shows_target(args: argparse.Namespace, out: TextIO, count: int) -> bool:
    if args.json or args.bare:
        return False
    if args.show_target:
        return True
    isatty = getattr(out, "isatty", None)
    return count > 1 and callable(isatty) and bool(isatty())


def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """Everything after argument parsing; returns the exit status."""
    raw_out = out
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
        return _load_failed(script, exc, err)
    with sandbox:
        findings = lint(script)
        if args.lint:
            for w in findings:
                out.write(f"{w}\n")
            return EXIT_OK
        env = build_env(args)
        items = build_targets(args, stdin)
        if not items:
            raise UsageError("no TARGET given (arguments or --urls)")
        labelled = _shows_target(args, raw_out, len(items))
        if args.explain:
            _describe_env(args, env, err)
            for w in findings:
                err.write(f"pac-eval: lint: {w}\n")
        port_notes: dict[int, str] = {}  # id(item) -> the note, for --json's warnings
        for port, on_port in sorted(unseen_name_ports(items).items()):
            note = _port_note(port)
            port_notes.update((id(i), note) for i in on_port)
            if not args.json:
                more = len(on_port) - 1
                tail = f" (and {more} more target{'s' * (more > 1)} on that port)" if more else ""
                err.write(f"pac-eval: note: {on_port[0].label}: {note}{tail}\n")
        parsed = _Parsed()
        failed = mismatched = 0
        pairs = [(i.target.url, i.target.host) for i in items]
        results = evaluate_batch(sandbox, script, pairs, env)
        for item, result in zip(items, results, strict=True):
            target = item.target
            if target.note and not args.json:
                err.write(f"pac-eval: note: {target.note}\n")
            for alert in result.alerts:
                err.write(f"pac-eval: alert: {alert}\n")
            if args.json:
                out.write(_json_line(target, result, port_notes.get(id(item))) + "\n")
            else:
                text = f"ERROR {result.error}" if result.error is not None else result.result
                if labelled:  # the TAB is ours; both fields are escaped
                    raw_out.write(f"{_escape(item.label)}\t{_escape(str(text))}\n")
                else:
                    out.write(f"{text}\n")
                if result.result is not None and not args.explain:
                    for d in parsed(result.result).dropped:
                        err.write(
                            f"pac-eval: {target.url}: entry {d.entry!r} dropped: {d.reason}\n"
                        )
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
            err.write(f"pac-eval: {failed} of {len(items)} evaluations failed\n")
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
