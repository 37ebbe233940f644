"""Origin servers for the benchmark namespace (one process, started by `run.py`).

- bulk (`BULK_IP:BULK_PORT`): the client sends `DOWN n\\n`, the server sends n bytes and
  closes. One thread per connection with blocking `send` of a prebuilt buffer: the GIL is
  released for the whole copy, so the origin runs at kernel speed and the measurement is
  about the proxy, not about this file.
- hold (`BULK_IP:HOLD_PORT`): sends one byte on accept (so the client knows the relay is
  up end to end), then holds the connection, discarding input, until the client closes.
  uvloop, because the memory scenario keeps thousands of these open at once.
- http (`HTTP_IP:80`, only with `--http`): a minimal HTTP/1.1 responder, the fallback
  when nginx is not installed. It is slower than nginx, so the report names which ran.

Prints `READY` on stdout once everything listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import sys
import threading

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.rig import BULK_IP, BULK_PORT, HOLD_PORT, HTTP_IP

BLOCK = memoryview(os.urandom(4 << 20))
MAX_REQUEST = 128
BODY = b"hello from the benchmark origin\n"


def raise_nofile() -> None:
    """Hold thousands of idle connections: the soft limit up to the hard one."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- bulk (threads)


def bulk_connection(conn: socket.socket) -> None:
    """Answer one `DOWN n` request with n bytes, then close (bounded by socket timeouts)."""
    with conn:
        conn.settimeout(60)
        request = b""
        while not request.endswith(b"\n") and len(request) < MAX_REQUEST:
            data = conn.recv(MAX_REQUEST)
            if not data:
                return
            request += data
        words = request.split()
        if len(words) != 2 or words[0] != b"DOWN" or not words[1].isdigit():
            return
        remaining = int(words[1])
        size = len(BLOCK)
        while remaining > 0:
            remaining -= conn.send(BLOCK[: min(remaining, size)])
        conn.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass


def serve_bulk(listener: socket.socket) -> None:
    while True:
        conn, _addr = listener.accept()
        threading.Thread(target=bulk_connection, args=(conn,), daemon=True).start()


# --------------------------------------------------------------------------- hold and http


class Hold(asyncio.Protocol):
    """One idle connection: a byte to say hello, then nothing until the client closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"H")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # close our side too


OK_KEEP = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
)
OK_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
)


class Http(asyncio.Protocol):
    """GET-only HTTP/1.1: one fixed answer per request head; honours `Connection: close`."""

    def __init__(self) -> None:
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                if len(self.buf) > 65536:
                    self.transport.close()
                return
            self.buf = rest
            if b"connection: close" in head.lower():
                self.transport.write(OK_CLOSE)
                self.transport.close()
                return
            self.transport.write(OK_KEEP)


async def serve_async(http: bool) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(Hold, BULK_IP, HOLD_PORT, backlog=4096)
    if http:
        await loop.create_server(Http, HTTP_IP, 80, backlog=4096)
    print("READY", flush=True)
    await asyncio.Event().wait()  # until the runner stops us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", action="store_true", help="also serve HTTP on port 80")
    args = parser.parse_args()
    raise_nofile()
    listener = socket.create_server((BULK_IP, BULK_PORT), backlog=1024)
    threading.Thread(target=serve_bulk, args=(listener,), daemon=True).start()
    import uvloop

    uvloop.run(serve_async(args.http))
    return 0


if __name__ == "__main__":
    sys.exit(main())
