"""The evaluation worker: a child process that holds one engine with one loaded script.

Started by `pac.sandbox` as `python -m pac.worker`. It speaks JSON lines on its stdin and on
a private copy of its stdout (fd 1 itself is pointed at stderr, so nothing an engine prints
can corrupt the protocol):

    worker -> {"ready": true}                        after imports, before any script
    parent -> {"op": "load", "engine", "script", "env", "tz", "time_limit", "memory_limit"}
    worker -> the harness load reply (jslib envelope)
    parent -> {"op": "eval", "items": [[url, host], ...], "env": payload | null}
    worker -> one envelope line per item, in order, each written as soon as it is ready

Replies are forwarded undecoded: the supervisor validates them, since the script running
here is untrusted. Bounds: the address space is capped (RLIMIT_AS) once the interpreter and
engine are loaded; dukpy is interrupted in-process by SIGALRM at the time limit; pacparser
cannot be, so the supervisor kills the process instead. The worker dies with its parent,
and holds no capability: the proxy keeps CAP_NET_ADMIN (ambient, in the sidecar image), which
a child would inherit, and with it an engine exploit could rewrite the redirect rules.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from pac.engine import PacEngine, PacLoadError, create_engine


class _Interrupted(BaseException):
    """Raised by the SIGALRM handler; BaseException so no engine code swallows it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Interrupted()


@contextlib.contextmanager
def _time_limit(seconds: float, enabled: bool) -> Iterator[None]:
    """Interrupt the engine after `seconds` (only engines that poll for signals: dukpy)."""
    if not enabled:
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a worker must never outlive the proxy or pac-eval that started it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_privileges() -> None:
    """Give up every capability for good, before any script is read (Linux).

    no_new_privs first, so no later execve can grant any back (not even to uid 0); then the
    ambient set, the bounding set (only possible while CAP_SETPCAP is held, as for root),
    and finally the effective, permitted and inheritable sets. Lowering them cannot fail
    on Linux; if it does, OSError: the worker must not run a script with them.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before 4.3
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 1:
            break  # EINVAL: past the last capability; EPERM: no CAP_SETPCAP, try the rest
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; twice (64 bits)
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset() to no capability failed")


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_memory(limit: int) -> None:
    """Cap the address space at what is mapped now plus `limit` bytes for the script."""
    if limit <= 0:
        return
    cap = _vm_size() + limit
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _error_line(kind: str, message: str) -> bytes:
    return json.dumps({"k": kind, "m": message}).encode() + b"\n"


class Worker:
    """The worker's state: the engine and the bounds it runs under."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.engine: PacEngine | None = None
        self.time_limit = 1.0
        self.interruptible = False

    def send(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def load(self, msg: dict[str, Any]) -> None:
        if msg.get("tz"):
            os.environ["TZ"] = msg["tz"]
            time.tzset()
        self.time_limit = float(msg.get("time_limit", 1.0))
        engine = create_engine(msg["engine"])
        self.interruptible = engine.name == "dukpy"
        _limit_memory(int(msg.get("memory_limit", 0)))
        try:
            with _time_limit(self.time_limit, self.interruptible):
                reply = engine.load_raw(msg["script"], msg.get("env") or {})
        except _Interrupted:
            self.send(_error_line("timeout", f"loading took more than {self.time_limit:g} s"))
            return
        except PacLoadError as exc:
            self.send(_error_line(exc.error.kind, exc.error.message))
            return
        except MemoryError:
            self.send(_error_line("memory", "out of memory while loading the script"))
            return
        self.engine = engine
        self.send(str(reply).encode() + b"\n")

    def evaluate(self, msg: dict[str, Any]) -> None:
        engine = self.engine
        env = msg.get("env")
        interruptible = self.interruptible
        for url, host in msg["items"]:
            if engine is None:
                self.send(_error_line("script_error", "no script loaded"))
                continue
            try:
                if interruptible:
                    with _time_limit(self.time_limit, True):
                        reply = engine.call_raw(url, host, env)
                else:  # the supervisor bounds it (it kills the process)
                    reply = engine.call_raw(url, host, env)
                line = str(reply).encode() + b"\n"
            except _Interrupted:
                engine.reset_env()
                line = _error_line("timeout", f"evaluation took more than {self.time_limit:g} s")
            except MemoryError:
                engine.reset_env()
                line = _error_line("memory", "out of memory")
            env = None
            self.send(line)


def main() -> int:
    """Serve the protocol on stdin / the private stdout until stdin closes."""
    drop_privileges()
    _die_with_parent()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(proto_fd, "wb", buffering=0)
    worker = Worker(out)
    worker.send(b'{"ready": true}\n')
    for raw in sys.stdin.buffer:
        msg = json.loads(raw)
        if msg["op"] == "load":
            worker.load(msg)
        elif msg["op"] == "eval":
            worker.evaluate(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
