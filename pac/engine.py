"""Two JavaScript engines behind one interface: pacparser and dukpy.

Both embed QuickJS-ng; neither is used for its own PAC helpers. Each engine only knows how
to run a piece of JavaScript and call the harness entry point (jslib); loading, DNS rounds
and decoding the reply are shared here, so the engines cannot drift apart.

An engine runs in the calling process and is *not* bounded: a hostile script can hang or
exhaust it. Use `pac.sandbox` for anything that evaluates untrusted scripts; it runs these
engines in a supervised worker process.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pac.env import DnsRounds, PacEnv, safe_resolve
from pac.jslib import ENTRY, LOADER, harness_js
from pac.result import (
    Envelope,
    EvalError,
    EvalResult,
    ProtocolError,
    decode_envelope,
    failure,
)

ENGINES = ("pacparser", "dukpy")

# dukpy re-creates `call_python` and the `dukpy` argument object on every call: take the
# arguments, then remove both before the script can see them (same globals as pacparser).
_DUKPY_CALL = (
    "(function (d) { delete globalThis.dukpy; delete globalThis.call_python;"
    f" return {ENTRY}(d.u, d.h); }})(dukpy)"
)
#: The url argument that makes the harness return the load outcome instead of evaluating.
#: Real arguments can never be equal to it: control characters are refused (`_check_arg`).
_LOAD_QUERY = "\x01load"


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _check_arg(value: str, what: str) -> None:
    """C strings (pacparser) end at NUL, and no URL or host has control characters."""
    if not isinstance(value, str) or _CONTROL.search(value):
        raise ValueError(f"{what} must be a string without control characters")


class PacLoadError(Exception):
    """The script does not load: syntax error, top-level throw, no FindProxyForURL, bounds."""

    def __init__(self, error: EvalError):
        super().__init__(str(error))
        self.error = error


class PacEngine(ABC):
    """A loaded PAC script, ready to evaluate `FindProxyForURL(url, host)`.

    Call `load()` once, then `evaluate()` any number of times (the script stays loaded;
    global state persists between calls, as in browsers).
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self._loaded = False
        self._last_env: str | None = None
        self._last_payload: object = None

    # -- engine-specific primitives ---------------------------------------------------------
    @abstractmethod
    def _start(self) -> None:
        """Create a fresh JavaScript context."""

    @abstractmethod
    def _run(self, code: str) -> None:
        """Run a script for its side effects (the harness, the load call)."""

    @abstractmethod
    def _call(self, url: str, host: str) -> Any:
        """Call the harness entry point; returns its reply (a JSON string)."""

    @abstractmethod
    def close(self) -> None:
        """Free the JavaScript context."""

    # -- shared logic -----------------------------------------------------------------------
    def load_raw(self, script: str, payload: dict[str, Any]) -> Any:
        """Load `script` in a fresh context; the harness reply, undecoded (for the worker)."""
        self._start()
        self._run(harness_js())
        self._run(f"{LOADER}({json.dumps(script)}, {json.dumps(payload)});")
        self.reset_env()
        self._loaded = True
        return self._call(_LOAD_QUERY, "load")

    def load(self, script: str, env: PacEnv | None = None) -> None:
        """Load `script` in a fresh context. Raises PacLoadError with line and message.

        Top-level code sees `env` (hermetic, empty by default): DNS at load time is answered
        from its table only; there are no restarts at load.
        """
        env = env or PacEnv()
        reply = self.load_raw(script, env.payload(env.static_table()))
        try:
            envelope = decode_envelope(reply)
        except ProtocolError as exc:
            self._loaded = False
            raise PacLoadError(EvalError("script_error", f"engine protocol error: {exc}")) from None
        if envelope.outcome.error is not None:
            self._loaded = False
            raise PacLoadError(envelope.outcome.error)

    def call_raw(self, url: str, host: str, payload: dict[str, Any] | None) -> Any:
        """One harness call, reply undecoded (the worker forwards it to the supervisor).

        The environment is only re-sent when it changed, so a batch pays for it once.
        """
        _check_arg(url, "url")
        _check_arg(host, "host")
        if payload is not None and payload is not self._last_payload:
            env_json = json.dumps(payload, sort_keys=True)
            if env_json != self._last_env:
                self._run(f"__pacEnv({env_json});")
                self._last_env = env_json
            self._last_payload = payload
        return self._call(url, host)

    def reset_env(self) -> None:
        """Forget which environment the context holds (after an interrupted call)."""
        self._last_env = None
        self._last_payload = None

    def run_once(self, url: str, host: str, payload: dict[str, Any] | None) -> Envelope:
        """One harness call, decoded. `payload` None reuses the previous environment."""
        try:
            return decode_envelope(self.call_raw(url, host, payload))
        except ProtocolError as exc:
            self.reset_env()
            return Envelope(failure("exception", f"engine protocol error: {exc}"), ())

    def evaluate(self, url: str, host: str, env: PacEnv) -> EvalResult:
        """FindProxyForURL(url, host) under `env`, restarting to feed it DNS answers."""
        if not self._loaded:
            raise RuntimeError("load() a script first")
        rounds = DnsRounds(env)
        while True:
            envelope = self.run_once(url, host, rounds.payload())
            need = rounds.unanswered(envelope.misses)
            if need and env.resolver is not None:
                rounds.add({name: safe_resolve(env.resolver, name) for name in need})
            if not rounds.rerun():
                return rounds.finish(envelope.outcome, envelope.misses)

    def __enter__(self) -> PacEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PacparserEngine(PacEngine):
    """pacparser's QuickJS context, with its helpers replaced by ours.

    pacparser keeps one global context per process, so only one instance may be open.
    """

    name = "pacparser"
    _open: ClassVar[PacparserEngine | None] = None

    def __init__(self) -> None:
        super().__init__()
        import pacparser
        from pacparser import _pacparser

        self._pp = pacparser
        self._error = _pacparser.error
        self._started = False

    def _start(self) -> None:
        owner = PacparserEngine._open
        if owner is not None and owner is not self:
            raise RuntimeError("pacparser has one context per process; close the other engine")
        if self._started:
            self._pp.cleanup()
        self._pp.init()
        self._started = True
        PacparserEngine._open = self

    def _run(self, code: str) -> None:
        try:
            self._pp.parse_pac_string(code)
        except self._error as exc:
            raise PacLoadError(EvalError("script_error", f"pacparser: {exc}")) from None

    def _call(self, url: str, host: str) -> Any:
        try:
            return self._pp.find_proxy(url, host)
        except self._error as exc:
            # Only when the harness itself could not complete (e.g. out of memory).
            return json.dumps({"k": "exception", "m": f"pacparser: {exc}"})

    def close(self) -> None:
        if self._started:
            self._pp.cleanup()
            self._started = False
        if PacparserEngine._open is self:
            PacparserEngine._open = None


class DukpyEngine(PacEngine):
    """dukpy's QuickJS interpreter, with its host bindings removed by the harness."""

    name = "dukpy"

    def __init__(self) -> None:
        super().__init__()
        import dukpy

        self._dukpy = dukpy
        self._interp: Any = None

    def _start(self) -> None:
        self._interp = self._dukpy.JSInterpreter()
        # The interpreter routes console/require through Python; the harness deletes the
        # globals, and this drops the Python side so nothing is reachable even by name.
        self._interp._funcs.clear()

    def _run(self, code: str) -> None:
        try:
            self._interp.evaljs(code + "\nnull;")
        except self._dukpy.JSRuntimeError as exc:
            raise PacLoadError(EvalError("script_error", f"dukpy: {exc}")) from None

    def _call(self, url: str, host: str) -> Any:
        try:
            return self._interp.evaljs(_DUKPY_CALL, u=url, h=host)
        except self._dukpy.JSRuntimeError as exc:
            text = str(exc).splitlines()[0] if str(exc) else "error"
            kind = "memory" if "out of memory" in text else "exception"
            return json.dumps({"k": kind, "m": f"dukpy: {text}"})

    def close(self) -> None:
        self._interp = None


def create_engine(name: str) -> PacEngine:
    """An engine by name (`pacparser` or `dukpy`)."""
    if name == "pacparser":
        return PacparserEngine()
    if name == "dukpy":
        return DukpyEngine()
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")


def load_engine(name: str, script: str, env: PacEnv | None = None) -> PacEngine:
    """Create an engine and load `script` into it (closing it again if the load fails)."""
    engine = create_engine(name)
    try:
        engine.load(script, env)
    except BaseException:
        engine.close()
        raise
    return engine
