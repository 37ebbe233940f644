"""Worker processes: N copies of the event loop behind SO_REUSEPORT listeners.

The kernel spreads new connections over the workers' sockets, so every core relays. The
parent only supervises: it forwards SIGTERM/SIGINT (each worker then drains its own
relays), restarts a worker that died on its own (with a pause, so a crash loop cannot spin),
and exits once every worker has stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger("airgap.proxy")

RESTART_PAUSE = 1.0
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _spawn(start_worker: Callable[[int], int], index: int) -> int:
    pid = os.fork()
    if pid == 0:  # the worker: signals wait (blocked) until its loop can handle them
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        status = 1
        try:
            status = start_worker(index)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(status)
    return pid


def run_workers(count: int, start_worker: Callable[[int], int]) -> int:
    """Run `start_worker(index)` in `count` processes (in this process when count is 1)."""
    if count <= 1:
        return start_worker(0)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    children: dict[int, int] = {}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        children[_spawn(start_worker, index)] = index
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            worst = max(worst, code if code >= 0 else 1)
            continue
        log.error("worker %d exited with %d; restarting it", index, code)
        time.sleep(RESTART_PAUSE)
        if not stopping:
            children[_spawn(start_worker, index)] = index
    return worst
