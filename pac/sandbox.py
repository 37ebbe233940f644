"""Bounded PAC evaluation in a supervised worker process.

Neither engine can be interrupted reliably from outside (pacparser not at all), and a
hostile script can loop, recurse, allocate or crash the engine. So the engine lives in a
child process (`pac.worker`) that the caller supervises: every evaluation has a deadline,
the child's address space is capped, and a child that overruns or dies is killed and
replaced (the script is reloaded), while the caller gets a typed error and carries on.

Two front ends share the protocol and the DNS-round logic:

* `PacSandbox`: synchronous, for `pac-eval`; `evaluate_many()` streams a batch through one
  worker with the script loaded once, one message per chunk of targets.
* `AsyncPacSandbox`: for the proxy; never blocks the event loop (pipes are asyncio
  streams, resolvers run as coroutines or in threads), with a small pool of workers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pac.engine import ENGINES, PacLoadError
from pac.env import DnsRounds, PacEnv, canonical_addresses, safe_resolve
from pac.loader import DEFAULT_MAX_BYTES
from pac.result import (
    Envelope,
    EvalError,
    EvalResult,
    ProtocolError,
    decode_envelope,
    failure,
)

#: Default engine (chosen by measurement: see benchmarks/pac_bench.py and the README).
DEFAULT_ENGINE = "pacparser"
#: Longest reply line accepted from a worker (the harness caps results at 64 KiB).
MAX_REPLY_BYTES = 4 << 20
#: Targets per message in a batch: big enough to amortise the hop, small enough to stream.
CHUNK = 1024
#: How long a fresh worker may take to import Python and the engine (not the script's time).
STARTUP_TIMEOUT = 30.0
#: Extra time the supervisor allows before killing, so dukpy's in-process interrupt (which
#: keeps the worker alive) normally wins.
GRACE = 0.25
#: How long a batch's reader lets replies pile up in the pipe before it reads them (see
#: `_SyncWorker.read_line`): far below the evaluation bound, and a few hundred cheap
#: evaluations' worth.
PACE = 0.002

AsyncResolver = Callable[[str], Awaitable[Sequence[str]]]

#: Why an evaluation failed without running: no engine could be started (not the input's
#: fault, unlike a timeout or a worker that died under the evaluation).
CANNOT_RESTART = "the evaluation worker cannot be restarted"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one script: seconds per evaluation (and for loading), bytes of address space
    for the script beyond the interpreter's own, and bytes of script source."""

    time: float = 1.0
    memory: int = 256 << 20
    script_bytes: int = DEFAULT_MAX_BYTES


def check_script(script: str, limits: Limits) -> None:
    """Refuse an over-size script before any engine sees it."""
    size = len(script.encode("utf-8", "surrogatepass"))
    if size > limits.script_bytes:
        raise PacLoadError(
            EvalError(
                "script_error",
                f"the PAC script is {size} bytes, over the limit of {limits.script_bytes}",
            )
        )


def _worker_command() -> tuple[list[str], dict[str, str]]:
    """`python -m pac.worker`, importable even when this package is not installed."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return [sys.executable, "-m", "pac.worker"], env


def _load_message(script: str, engine: str, limits: Limits, tz: str | None, env: PacEnv) -> bytes:
    msg = {
        "op": "load",
        "engine": engine,
        "script": script,
        "env": env.payload(env.static_table()),
        "tz": tz,
        "time_limit": limits.time,
        "memory_limit": limits.memory,
    }
    return json.dumps(msg).encode() + b"\n"


def _prepare(
    script: str, engine: str, limits: Limits | None, tz: str | None, load_env: PacEnv | None
) -> tuple[Limits, bytes]:
    """Check what both front ends are given, before any process starts: the engine's name
    and the script's size; returns the limits in force and the load message."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    limits = limits or Limits()
    check_script(script, limits)
    return limits, _load_message(script, engine, limits, tz, load_env or PacEnv())


def _eval_message(items: Sequence[tuple[str, str]], payload: dict[str, Any] | None) -> bytes:
    return (
        json.dumps({"op": "eval", "items": [list(i) for i in items], "env": payload}).encode()
        + b"\n"
    )


#: Decoded replies by their bytes: a batch repeats a few short replies (`{"r":"DIRECT"}`)
#: thousands of times. An envelope is immutable and a function of its bytes alone.
_DECODED: dict[bytes, Envelope] = {}
_DECODED_LINE = 256
_DECODED_MAX = 4096


def _decode(line: bytes) -> Envelope:
    known = _DECODED.get(line)
    if known is not None:
        return known
    try:
        envelope = decode_envelope(line.decode("utf-8", "replace"))
    except ProtocolError as exc:
        return Envelope(failure("exception", f"worker protocol error: {exc}"), ())
    if len(line) <= _DECODED_LINE:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[line] = envelope
    return envelope


def exhausted_bounds(result: EvalResult) -> bool:
    """Whether an evaluation failed by exhausting a bound on its input: the time limit, the
    memory limit, or a worker that died under it. Running the same input again would most
    likely cost the same (a caller may cache the failure for a while)."""
    error = result.error
    if error is None:
        return False
    return error.kind in ("timeout", "memory") or (
        error.kind == "crash" and error.message != CANNOT_RESTART
    )


def _death(returncode: int | None, limits: Limits) -> EvalResult:
    """The error for a worker that died under an evaluation."""
    if returncode is not None and returncode < 0:
        try:
            how = signal.Signals(-returncode).name
        except ValueError:
            how = f"signal {-returncode}"
    else:
        how = f"exit status {returncode}"
    hint = " (likely the memory limit)" if limits.memory else ""
    return failure("crash", f"the evaluation worker died: {how}{hint}")


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


class _SyncWorker:
    """One worker process seen from a synchronous caller."""

    def __init__(self, load_msg: bytes, limits: Limits) -> None:
        cmd, env = _worker_command()
        self.limits = limits
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self._buf = bytearray()
        self._lines: collections.deque[bytes] = collections.deque()
        try:
            self.read_line(time.monotonic() + STARTUP_TIMEOUT)  # {"ready": true}
            self.send(load_msg)
            reply = self.read_line(time.monotonic() + limits.time + GRACE)
        except _Timeout:
            self.kill()
            raise PacLoadError(
                EvalError("timeout", f"loading the script took more than {limits.time:g} s")
            ) from None
        except _Died:
            code = self.kill()
            raise PacLoadError(_death(code, limits).error or EvalError("crash", "died")) from None
        envelope = _decode(reply)
        if envelope.outcome.error is not None:
            self.kill()
            raise PacLoadError(envelope.outcome.error)

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Died() from None

    def read_line(self, deadline: float, pace: bool = False) -> bytes:
        """Next reply line; _Timeout at `deadline`, _Died on EOF.

        `pace`: more lines are on their way (a batch). Once the pipe is readable, wait up to
        PACE seconds (never past the deadline) before reading, so that one read takes the
        replies of many evaluations: waking up for every line costs the supervisor and the
        worker more than the evaluations themselves on a cheap script. A reply that is
        ready is read even when the deadline passes during the pause.
        """
        while not self._lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout()
            if not self._sel.select(remaining):
                continue
            if pace:
                time.sleep(max(0.0, min(PACE, deadline - time.monotonic())))
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise _Died()
            self._buf += chunk
            if b"\n" in chunk:
                *complete, rest = self._buf.split(b"\n")
                self._lines.extend(map(bytes, complete))
                self._buf = bytearray(rest)
            if len(self._buf) > MAX_REPLY_BYTES:
                raise _Died()
        return self._lines.popleft()

    def kill(self) -> int | None:
        """Kill and reap the worker; its exit status (negative: the signal)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(OSError):
            self._sel.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        return self.proc.wait()

    def close(self) -> None:
        """Stop the worker politely (EOF on stdin), then make sure."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)
        self.kill()


class PacSandbox:
    """Synchronous bounded evaluation of one script (the `pac-eval` front end).

    `start()` loads the script (raises PacLoadError: syntax error, no entry point, load
    timeout, over-size); `evaluate()`/`evaluate_many()` never raise for script behaviour:
    failures come back as EvalResult errors, and the worker is replaced when it was killed.
    """

    def __init__(
        self,
        script: str,
        engine: str = DEFAULT_ENGINE,
        limits: Limits | None = None,
        tz: str | None = None,
        load_env: PacEnv | None = None,
    ) -> None:
        self.engine = engine
        self.limits, self._load_msg = _prepare(script, engine, limits, tz, load_env)
        self._worker: _SyncWorker | None = None
        self._started = False
        self.respawns = 0

    def start(self) -> PacSandbox:
        """Spawn the worker and load the script (once); raises PacLoadError."""
        if not self._started:
            self._worker = _SyncWorker(self._load_msg, self.limits)
            self._started = True
        return self

    def _respawn(self) -> _SyncWorker | None:
        self.respawns += 1
        try:
            self._worker = _SyncWorker(self._load_msg, self.limits)
        except PacLoadError:
            self._worker = None
        return self._worker

    def _run_chunk(
        self, items: Sequence[tuple[str, str]], payload: dict[str, Any]
    ) -> list[Envelope]:
        """First-round envelopes for `items`, in order, surviving hangs and crashes."""
        out: list[Envelope] = []
        limit = self.limits.time + GRACE
        while len(out) < len(items):
            worker = self._worker or self._respawn()
            if worker is None:
                dead = failure("crash", CANNOT_RESTART)
                out.extend(Envelope(dead, ()) for _ in items[len(out) :])
                break
            pending = items[len(out) :]
            try:
                worker.send(_eval_message(pending, payload))
                for left in range(len(pending), 0, -1):
                    line = worker.read_line(time.monotonic() + limit, pace=left > 1)
                    out.append(_decode(line))
            except _Timeout:
                worker.kill()
                self._worker = None
                msg = f"evaluation took more than {self.limits.time:g} s"
                out.append(Envelope(failure("timeout", msg), ()))
            except _Died:
                code = worker.kill()
                self._worker = None
                out.append(Envelope(_death(code, self.limits), ()))
        return out

    def _finish(
        self, url: str, host: str, env: PacEnv, rounds: DnsRounds, first: Envelope
    ) -> EvalResult:
        envelope = first
        while True:
            need = rounds.unanswered(envelope.misses)
            if need and env.resolver is not None:
                rounds.add({name: safe_resolve(env.resolver, name) for name in need})
            if not rounds.rerun():
                return rounds.finish(envelope.outcome, envelope.misses)
            envelope = self._run_chunk([(url, host)], rounds.payload())[0]

    def evaluate_many(
        self, items: Iterable[tuple[str, str]], env: PacEnv | None = None
    ) -> Iterator[EvalResult]:
        """Evaluate (url, host) pairs in order; results stream out chunk by chunk."""
        env = env or PacEnv()
        self.start()
        static = env.static_table()
        chunk: list[tuple[str, str]] = []

        def flush() -> Iterator[EvalResult]:
            base = DnsRounds(env, static).payload()
            for (url, host), first in zip(chunk, self._run_chunk(chunk, base), strict=True):
                if not first.misses:  # the common case: nothing left to resolve
                    yield first.outcome
                    continue
                rounds = DnsRounds(env, static)
                rounds.payload()
                yield self._finish(url, host, env, rounds, first)

        for item in items:
            chunk.append(item)
            if len(chunk) >= CHUNK:
                yield from flush()
                chunk = []
        if chunk:
            yield from flush()

    def evaluate(self, url: str, host: str, env: PacEnv | None = None) -> EvalResult:
        """One evaluation."""
        return next(iter(self.evaluate_many([(url, host)], env)))

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> PacSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AsyncWorker:
    """One worker process seen from asyncio."""

    def __init__(self, proc: asyncio.subprocess.Process, limits: Limits) -> None:
        self.proc = proc
        self.limits = limits
        #: Set when the worker must not be used again (killed, or cancelled while starting).
        self.broken = False
        #: Set while the reply a cancelled caller left unread is being dropped (`_drain`):
        #: the worker goes back to the pool only once its pipe is in step again.
        self.draining = False

    def discard(self) -> None:
        """Kill without waiting (safe from a cancelled task); never reused afterwards."""
        self.broken = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    @property
    def usable(self) -> bool:
        return not self.broken and self.proc.returncode is None

    @classmethod
    async def spawn(cls, load_msg: bytes, limits: Limits) -> _AsyncWorker:
        cmd, env = _worker_command()
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=MAX_REPLY_BYTES,
        )
        worker = cls(proc, limits)
        try:
            await worker.read_line(STARTUP_TIMEOUT)
            await worker.send(load_msg)
            reply = await worker.read_line(limits.time + GRACE)
        except _Timeout:
            await worker.kill()
            raise PacLoadError(
                EvalError("timeout", f"loading the script took more than {limits.time:g} s")
            ) from None
        except _Died:
            code = await worker.kill()
            raise PacLoadError(_death(code, limits).error or EvalError("crash", "died")) from None
        except BaseException:  # cancelled: no half-started process may outlive the caller
            worker.discard()
            raise
        envelope = _decode(reply)
        if envelope.outcome.error is not None:
            await worker.kill()
            raise PacLoadError(envelope.outcome.error)
        return worker

    async def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise _Died() from None

    async def read_line(self, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise _Timeout() from None
        except (ValueError, asyncio.LimitOverrunError):
            raise _Died() from None
        if not line.endswith(b"\n"):
            raise _Died()
        return line

    async def kill(self) -> int | None:
        self.broken = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        return await self.proc.wait()


_NOBODY: Any = object()
Slot = Any  # an `_AsyncWorker`, or None for one to be spawned on first use


class _FairPool:
    """Engine slots shared between owners (the proxy's clients) so none can take them all.

    An owner holds at most `share` slots at once; its further requests wait in its own
    queue, which does not delay anyone else's. A freed slot goes to the next owner in
    turn (round robin over owners with waiting requests), not to the oldest request, so a
    client with a hundred queued evaluations is served once per round like any other.
    A slot counts for its owner until it is given back, including while the reply of a
    cancelled evaluation is still being read (`_drain`): a client that leaves does not
    get its share back before the engine is free. Requests with the owner None share
    one queue and may use every slot (`pac-eval`, `explain`, tests).
    """

    def __init__(self, slots: Sequence[Slot], share: int) -> None:
        self.size = len(slots)
        self.share = max(1, min(share, self.size))
        self._free: collections.deque[Slot] = collections.deque(slots)
        self._held: dict[str | None, int] = {}
        self._waiting: dict[str | None, collections.deque[asyncio.Future[Slot]]] = {}

    def _cap(self, owner: str | None) -> int:
        return self.size if owner is None else self.share

    def held(self, owner: str | None) -> int:
        """Slots `owner` holds now."""
        return self._held.get(owner, 0)

    def waiting(self, owner: str | None) -> int:
        """Requests of `owner` waiting for a slot."""
        queue = self._waiting.get(owner)
        return len(queue) if queue else 0

    def _grant(self, owner: str | None) -> Slot:
        self._held[owner] = self._held.get(owner, 0) + 1
        return self._free.popleft()

    async def acquire(self, owner: str | None) -> Slot:
        if self._free and owner not in self._waiting and self.held(owner) < self._cap(owner):
            return self._grant(owner)
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, collections.deque()).append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(owner, fut.result())  # granted, but its caller is gone
            else:  # dropped from the queue: a client that left is never evaluated
                queue = self._waiting.get(owner)
                if queue is not None:
                    with contextlib.suppress(ValueError):
                        queue.remove(fut)
                    if not queue:
                        del self._waiting[owner]
                self._dispatch()
            raise

    def release(self, owner: str | None, slot: Slot) -> None:
        held = self._held.get(owner, 0) - 1
        if held > 0:
            self._held[owner] = held
        else:
            self._held.pop(owner, None)
        self._free.append(slot)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiting owners in turn, each up to its cap."""
        while self._free:
            owner = next((o for o in self._waiting if self.held(o) < self._cap(o)), _NOBODY)
            if owner is _NOBODY:
                return  # nobody waiting may take one
            queue = self._waiting.pop(owner)
            fut = queue.popleft()
            if queue:
                self._waiting[owner] = queue  # to the back of the round
            if not fut.done():
                fut.set_result(self._grant(owner))


class AsyncPacSandbox:
    """Asyncio front end for the proxy: `await evaluate(url, host, env)`.

    Up to `workers` evaluations run at once, each in its own process; the event loop only
    waits on pipes. DNS misses are answered by `resolver` (a coroutine function) when given,
    else by `env.resolver` in a thread, each lookup bounded by `dns_timeout`. An evaluation
    may name its `owner` (the proxy passes the client address): one owner holds at most
    `share` engines at once, and freed engines go to owners in turn (`_FairPool`).
    """

    def __init__(
        self,
        script: str,
        engine: str = DEFAULT_ENGINE,
        limits: Limits | None = None,
        tz: str | None = None,
        workers: int = 1,
        dns_timeout: float = 2.0,
        load_env: PacEnv | None = None,
        share: int | None = None,
    ) -> None:
        self.engine = engine
        self.dns_timeout = dns_timeout
        self.limits, self._load_msg = _prepare(script, engine, limits, tz, load_env)
        self._size = max(1, workers)
        self._share = self._size if share is None else share
        self._idle: _FairPool | None = None
        self._all: set[_AsyncWorker] = set()
        self._drains: set[asyncio.Task[None]] = set()  # referenced until done
        self.respawns = 0

    async def start(self) -> AsyncPacSandbox:
        """Spawn the workers and load the script; raises PacLoadError."""
        if self._idle is None:
            first = await _AsyncWorker.spawn(self._load_msg, self.limits)
            self._all.add(first)
            # The other slots are spawned on first use.
            slots = [first, *([None] * (self._size - 1))]
            self._idle = _FairPool(slots, self._share)
        return self

    @property
    def pool(self) -> _FairPool:
        """The engine slots and who holds them (started sandboxes only)."""
        assert self._idle is not None, "start() the sandbox first"
        return self._idle

    async def _acquire(self, owner: str | None = None) -> _AsyncWorker | None:
        await self.start()
        pool = self.pool
        worker = await pool.acquire(owner)
        if worker is None or not worker.usable:
            if worker is not None:
                self._all.discard(worker)
                self.respawns += 1
            try:
                worker = await _AsyncWorker.spawn(self._load_msg, self.limits)
            except PacLoadError:
                pool.release(owner, None)
                return None
            except BaseException:  # cancelled while spawning: the slot stays in the pool
                pool.release(owner, None)
                raise
            self._all.add(worker)
        return worker

    def _release(self, worker: _AsyncWorker | None, owner: str | None = None) -> None:
        if worker is not None and worker.draining:
            return  # given back by `_drain` once its reply has been read
        self.pool.release(owner, worker)

    async def _run(
        self, worker: _AsyncWorker, url: str, host: str, payload: dict, owner: str | None
    ) -> Envelope:
        try:
            await worker.send(_eval_message([(url, host)], payload))
            return _decode(await worker.read_line(self.limits.time + GRACE))
        except _Timeout:
            await worker.kill()
            msg = f"evaluation took more than {self.limits.time:g} s"
            return Envelope(failure("timeout", msg), ())
        except _Died:
            return Envelope(_death(await worker.kill(), self.limits), ())
        except asyncio.CancelledError:
            # The proxy cancels a decision when its client goes away. The request is written
            # by then (a cancellation comes only at an await, after the write), so a reply
            # will come: left in the pipe it would be read as the answer to the *next*
            # request, and killing the worker instead would let a client that connects and
            # leaves cost a process start each time. It is read and dropped in the
            # background; the worker returns to the pool only after that.
            worker.draining = True
            drain = asyncio.get_running_loop().create_task(self._drain(worker, owner))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
            raise
        except BaseException:  # anything else leaves the pipe in an unknown state
            worker.discard()
            raise

    async def _drain(self, worker: _AsyncWorker, owner: str | None) -> None:
        """Read and drop the reply a cancelled caller left unread, then give the worker back
        (killed, if the reply does not come within the evaluation bound); until then it
        still counts against its owner's share."""
        try:
            await worker.read_line(self.limits.time + GRACE)
        except (_Timeout, _Died):
            await worker.kill()
        except BaseException:
            worker.discard()
            raise
        finally:
            worker.draining = False
            if self._idle is not None:  # else the sandbox is closed
                self._release(worker, owner)

    async def _resolve(self, name: str, env: PacEnv, resolver: AsyncResolver | None) -> tuple:
        try:
            if resolver is not None:
                answer = await asyncio.wait_for(resolver(name), self.dns_timeout)
            else:
                assert env.resolver is not None
                call = asyncio.to_thread(safe_resolve, env.resolver, name)
                answer = await asyncio.wait_for(call, self.dns_timeout)
            return canonical_addresses(list(answer))
        except Exception:  # a failed or slow lookup does not resolve: fail closed
            return ()

    async def evaluate(
        self,
        url: str,
        host: str,
        env: PacEnv | None = None,
        resolver: AsyncResolver | None = None,
        owner: str | None = None,
    ) -> EvalResult:
        """FindProxyForURL(url, host); never raises for script behaviour, never blocks.

        Cancelling it while it waits for an engine drops it from the queue: it is never
        evaluated."""
        env = env or PacEnv()
        if resolver is not None and not inspect.iscoroutinefunction(resolver):
            raise TypeError("resolver must be a coroutine function")
        rounds = DnsRounds(env, has_resolver=resolver is not None or env.resolver is not None)
        while True:
            # One engine process per run, given back while the resolver is asked: a slow
            # name (which a client may choose) must not keep other evaluations waiting.
            worker = await self._acquire(owner)
            if worker is None:
                return failure("crash", CANNOT_RESTART)
            try:
                envelope = await self._run(worker, url, host, rounds.payload(), owner)
                dead = not worker.usable
            finally:
                self._release(worker, owner)
            if dead:
                return envelope.outcome
            need = rounds.unanswered(envelope.misses)
            if need and rounds.has_resolver:
                answers = await asyncio.gather(*(self._resolve(n, env, resolver) for n in need))
                rounds.add(dict(zip(need, answers, strict=True)))
            if not rounds.rerun():
                return rounds.finish(envelope.outcome, envelope.misses)

    async def aclose(self) -> None:
        """Stop every worker."""
        drains = list(self._drains)
        for drain in drains:
            drain.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        for worker in list(self._all):
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), 1)
            await worker.kill()
        self._all.clear()
        self._idle = None

    async def __aenter__(self) -> AsyncPacSandbox:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
