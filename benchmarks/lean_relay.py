"""A lean transparent relay, the floor a Python proxy on uvloop can reach on this machine.

`python3 lean_relay.py HOST PORT`: accept, read `SO_ORIGINAL_DST`, connect there, relay
with a pair of `asyncio.Protocol` halves (write-buffer water marks, `pause_reading`
backpressure, half-close). No sniffing, no policy, no logging, no limits: it is not a proxy
anyone should run, only the reference column (`run.py --lean`) that tells how much of
airgap-proxy's cost is its features and how much is Python + uvloop + the kernel.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys

SO_ORIGINAL_DST = 80
HIGH, LOW = 256 * 1024, 64 * 1024


class Half(asyncio.Protocol):
    """One direction: what `transport` receives is written to the peer's transport."""

    __slots__ = ("eof", "peer", "pending", "transport")

    def __init__(self) -> None:
        self.peer: Half | None = None
        self.eof = False
        self.pending = bytearray()  # what arrives before the other side is connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(HIGH, LOW)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None:  # uvloop may deliver before the pair is made
            self.pending += data
            return
        peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.eof:
            return False
        peer.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.peer.transport.resume_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.transport.close()


class Accepted(Half):
    """The client side: learns the original destination and connects there."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        raw = sock.getsockopt(socket.IPPROTO_IP, SO_ORIGINAL_DST, 16)
        port = struct.unpack_from("!H", raw, 2)[0]
        ip = socket.inet_ntoa(raw[4:8])
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self.connect(ip, port))

    async def connect(self, ip: str, port: int) -> None:
        try:
            _t, upstream = await asyncio.get_running_loop().create_connection(Half, ip, port)
        except OSError:
            self.transport.abort()
            return
        upstream.peer, self.peer = self, upstream
        if self.transport.is_closing():
            upstream.transport.close()
            return
        for src, dst in ((self, upstream), (upstream, self)):
            if src.pending:
                dst.transport.write(bytes(src.pending))
                src.pending = bytearray()
        self.transport.resume_reading()


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(Accepted, host, port, backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
