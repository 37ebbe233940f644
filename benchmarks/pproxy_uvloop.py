"""Start pproxy (the Python peer) on uvloop: `python3 pproxy_uvloop.py -l redir://H:P`.

pproxy's own command line crashes under uvloop 0.23: its `main()` calls `uvloop.install()`
and then `asyncio.get_event_loop()`, which uvloop's policy no longer answers without a
current loop. Installing the policy and a current loop first, and making pproxy's own
`install()` a no-op, gives the same server on the same uvloop.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


def main() -> None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    uvloop.install = lambda: None  # type: ignore[assignment]
    from pproxy import server

    sys.argv = ["pproxy", *sys.argv[1:]]
    server.main()


if __name__ == "__main__":
    main()
