"""The supervisor keeps its workers: one that cannot be started is tried again."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys

import pytest

from proxy import supervisor as workers
from tests.unit.waiting import until

#: A stand-in worker: reads its control pipe until the supervisor closes it, then exits 0.
FAKE_WORKER = (
    "import os\n"
    f"fd = int(os.environ[{workers.CONTROL_FD_ENV!r}])\n"
    "while os.read(fd, 65536):\n"
    "    pass\n"
)


async def test_a_worker_that_cannot_be_started_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_exec = asyncio.create_subprocess_exec
    started: list[asyncio.subprocess.Process] = []
    calls = 0

    async def fork_fails_once(*_argv: str, **kwargs: object) -> asyncio.subprocess.Process:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        proc = await real_exec(sys.executable, "-c", FAKE_WORKER, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    monkeypatch.setattr(workers.asyncio, "create_subprocess_exec", fork_fails_once)
    supervisor = asyncio.ensure_future(workers.supervise(1, ["run"], None, drain_timeout=1))
    # The retry comes after RESTART_PAUSE (1 s).
    await until(lambda: started or supervisor.done(), "a second start, or the supervisor's end")
    assert not supervisor.done(), supervisor  # it did not die of the failed start
    assert calls == 2 and len(started) == 1
    os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler: stop
    assert await asyncio.wait_for(supervisor, 15) == 0
    assert started[0].returncode == 0
