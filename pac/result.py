"""What one evaluation produced: the result string or a typed error, and what it read.

Kept apart from the engines so the sandbox, the CLI and the proxy share one vocabulary, and
so the JSON envelope that crosses from JavaScript (and from the worker process) is decoded
and validated in exactly one place: every field is checked, because a hostile script runs
on the other side of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard, get_args

from pac.routes import RouteVerdict, decide_routes

ErrorKind = Literal[
    "exception",  # the call threw
    "non_string",  # returned something that is not a primitive string
    "non_ascii",  # returned a string with non-ASCII characters (Chromium refuses these)
    "timeout",  # exceeded the time bound
    "memory",  # exceeded the memory bound (or returned an absurdly long string)
    "script_error",  # the script does not load (syntax error, throws at top level, empty)
    "no_entrypoint",  # no FindProxyForURL function
    "crash",  # the worker process died for another reason (engine bug); fail closed
]
ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))


def _is_error_kind(kind: object) -> TypeGuard[ErrorKind]:
    return isinstance(kind, str) and kind in ERROR_KINDS  # a list is not even hashable


@dataclass(frozen=True, slots=True)
class EvalError:
    """Why an evaluation (or a load) gave no result. `line` is the script line when known."""

    kind: ErrorKind
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.kind}: {self.message}{where}"

    def to_json(self) -> dict[str, Any]:
        """The `pac-eval --json` shape."""
        out: dict[str, Any] = {"kind": self.kind, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


@dataclass(frozen=True, slots=True)
class Reads:
    """What an evaluation observed, so a decision cache can be keyed on exactly that.

    `dns` lists every name looked up, in order, with the addresses it was given (empty when
    it did not resolve). A cached result stays right while those names give the same
    answers and `clock`, `random` are False; `my_ip` says it depends on the client address.
    """

    dns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    clock: bool = False
    my_ip: bool = False
    random: bool = False

    @property
    def cacheable(self) -> bool:
        """False when the result may change with nothing else changing (time, randomness)."""
        return not (self.clock or self.random)

    def to_json(self) -> dict[str, Any]:
        return {
            "dns": {name: list(addrs) for name, addrs in self.dns},
            "clock": self.clock,
            "my_ip": self.my_ip,
            "random": self.random,
        }


@dataclass(frozen=True, slots=True)
class EvalResult:
    """One FindProxyForURL call: `result` (verbatim) or `error`, never both."""

    result: str | None
    error: EvalError | None = None
    reads: Reads = field(default_factory=Reads)
    alerts: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    def verdict(self) -> RouteVerdict:
        """Our decision: a failed evaluation means REJECT, with the reason (fail closed)."""
        if self.error is not None or self.result is None:
            return RouteVerdict((), True, f"PAC evaluation failed: {self.error}")
        return decide_routes(self.result)


def failure(kind: ErrorKind, message: str, line: int | None = None) -> EvalResult:
    """An EvalResult carrying only an error."""
    return EvalResult(None, EvalError(kind, message, line))


class ProtocolError(Exception):
    """The envelope from the engine does not have the expected shape."""


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{what} is not a list of strings")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded harness reply: the evaluation plus the DNS names it could not answer."""

    outcome: EvalResult
    misses: tuple[str, ...]


def decode_envelope(text: Any) -> Envelope:
    """Validate and decode the harness's JSON reply (see jslib.HARNESS_JS).

    Raises ProtocolError on anything unexpected: a script that tampers with the harness's
    built-ins can garble the reply, and that must fail, not be half-believed.
    """
    if not isinstance(text, str):
        raise ProtocolError("engine reply is not a string")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"engine reply is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("engine reply is not an object")
    dns: list[tuple[str, tuple[str, ...]]] = []
    raw_dns = data.get("d", [])
    if not isinstance(raw_dns, list):
        raise ProtocolError("dns reads are not a list")
    for item in raw_dns:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ProtocolError("malformed dns read")
        dns.append((item[0], _str_list(item[1], "dns answer")))
    flags = [data.get(k, False) for k in ("c", "i", "x")]
    if not all(isinstance(f, bool) for f in flags):
        raise ProtocolError("read flags are not booleans")
    reads = Reads(tuple(dns), *flags)
    alerts = _str_list(data.get("a", []), "alerts")
    misses = _str_list(data.get("miss", []), "misses")
    kind = data.get("k")
    if kind is None:
        result = data.get("r")
        if "r" in data and not isinstance(result, str):
            raise ProtocolError("result is not a string")
        if isinstance(result, str) and not result.isascii():
            return Envelope(
                failure("non_ascii", "FindProxyForURL() returned a non-ASCII string"), misses
            )
        return Envelope(EvalResult(result, None, reads, alerts), misses)
    if not _is_error_kind(kind):
        raise ProtocolError(f"unknown error kind {kind!r}")
    message = data.get("m")
    line = data.get("l")
    if not isinstance(message, str) or not (
        line is None or (isinstance(line, int) and not isinstance(line, bool))
    ):
        raise ProtocolError("malformed error")
    return Envelope(EvalResult(None, EvalError(kind, message, line), reads, alerts), misses)
