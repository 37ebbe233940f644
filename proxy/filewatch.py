"""Noticing that a policy file changed, however it was changed, within a bounded time.

A bounded stat poll of the path, following symlinks: two system calls every `interval`, no
dependency, and it sees every way a file is changed in practice. An editor that writes a
new file and renames it over the old (a new inode), one that writes in place (size, mtime,
ctime), a chmod (mode, ctime), a deletion (an error instead of a stat), and a Kubernetes
ConfigMap volume, which writes a new `..<timestamp>` directory and swaps the `..data`
symlink the file's own symlink goes through (the path now resolves to another inode).

Only a change of what the path resolves to is reported; whether the new content is usable
is for the reader to decide.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine

#: Seconds between looks: a change is seen within this, well inside the 2 s promised.
POLL_INTERVAL = 0.5

Fingerprint = tuple[int, ...] | str


def fingerprint(path: str) -> Fingerprint:
    """What identifies the current content of `path` (the error's name if it has none)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"error:{exc.errno}"
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def watch(
    paths: Callable[[], tuple[str, ...]],
    changed: Callable[[], None],
    interval: float = POLL_INTERVAL,
) -> Coroutine[None, None, None]:
    """Call `changed()` whenever one of `paths()` (asked each time: a reload may add or
    drop a file PAC) resolves to something else than at the previous look. The first look
    is now, when this is called; the coroutine runs until cancelled."""
    seen: dict[str, Fingerprint] = {p: fingerprint(p) for p in paths()}

    async def follow() -> None:
        nonlocal seen
        while True:
            await asyncio.sleep(interval)
            now = {p: fingerprint(p) for p in paths()}
            if any(seen.get(p, now[p]) != now[p] for p in now):
                changed()
            seen = now

    return follow()
