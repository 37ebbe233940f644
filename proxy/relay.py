"""The relay: two `asyncio.Protocol` halves that copy bytes with backpressure.

After the routing decision nothing but the copy happens per chunk: no logging, no timers, no
awaits. Each half writes what it reads to its peer's transport; when the peer's write buffer
passes its high-water mark, the peer's protocol gets `pause_writing` and stops *our* reading,
so a slow reader never makes the proxy buffer without bound. Half-close is propagated with
`write_eof`; both transports close once both directions are done or either side is lost.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

#: Write buffer water marks: bounded memory per direction, enough to keep the pipe full.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024


class RelayOwner(Protocol):
    """Who is told when a half's transport is gone (the connection, for its audit line)."""

    def half_lost(self, half: Half, exc: Exception | None) -> None: ...


class Half(asyncio.Protocol):
    """One direction's reader: bytes received on `transport` are written to `peer.transport`."""

    __slots__ = ("eof", "nbytes", "owner", "peer", "transport")

    def __init__(self, transport: asyncio.Transport, owner: RelayOwner):
        self.transport = transport
        self.peer: Half = self  # set by `pair`
        self.nbytes = 0
        self.eof = False
        self.owner = owner  # an object, not a bound method: one allocation less per half
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer.eof:
            # Both directions are finished: close both (buffered bytes are flushed first).
            peer.transport.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        # Keep our transport open: the other direction may still carry data to this side.
        # Not a TLS one (an HTTPS upstream): it closes itself at EOF whatever we return,
        # and True only made asyncio log a warning for every such connection.
        return self.transport.can_write_eof()

    def pause_writing(self) -> None:
        # Our transport's buffer is full: stop reading what would be written to it.
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer_transport = self.peer.transport
        if not peer_transport.is_closing():
            peer_transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.half_lost(self, exc)


class _Unbuffered(asyncio.BufferedProtocol):
    """The protocol a client transport has for an instant at the hand-over (`pair`): its
    `get_buffer` and `buffer_updated` are one pair of functions shared by all (slots, not
    methods, so reading them makes no bound method)."""

    __slots__ = ("buffer_updated", "get_buffer")


def _no_read(*args: object) -> None:
    raise RuntimeError("a read reached the hand-over protocol")


def _unbuffered() -> _Unbuffered:
    protocol: Any = _Unbuffered()  # slots over the base class's methods: untyped to mypy
    protocol.get_buffer = protocol.buffer_updated = _no_read
    return protocol


_UNBUFFERED = _unbuffered()


def pair(
    client: asyncio.Transport,
    upstream: asyncio.Transport,
    owner: RelayOwner,
) -> tuple[Half, Half]:
    """Switch both transports to relay halves that feed each other."""
    from_client = Half(client, owner)
    from_upstream = Half(upstream, owner)
    from_client.peer, from_upstream.peer = from_upstream, from_client
    # The client's set-up protocol is a BufferedProtocol, and uvloop keeps a buffered
    # protocol's get_buffer and buffer_updated (two bound methods, 128 bytes) for the life
    # of the transport, even once a plain Protocol has replaced it. Passing through a
    # protocol whose two are shared functions leaves nothing of that per connection.
    client.set_protocol(_UNBUFFERED)
    client.set_protocol(from_client)
    upstream.set_protocol(from_upstream)
    return from_client, from_upstream
