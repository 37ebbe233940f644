"""Sniffing a client that dribbles tiny segments costs linear, not quadratic, parsing; a
normal hello or head is still recognised as soon as its last byte arrives."""

from __future__ import annotations

import contextlib
import ssl

import pytest

from proxy import connection
from proxy.sniff import MAX_SNIFF_BYTES
from tests.unit.fakes import FakeTransport


def client_hello(name: str) -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _feed(monkeypatch: pytest.MonkeyPatch, stream: bytes, chunk: int) -> tuple[int, str | None]:
    """Feed `stream` in `chunk`-byte pieces; returns (sniff calls, name when decided)."""
    calls = 0
    real_sniff = connection.sniff

    def counting(data: bytes):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real_sniff(data)

    monkeypatch.setattr(connection, "sniff", counting)
    decided: list[str | None] = []

    class Probe(connection.Intercepted):
        """The real data_received; the decision step only records the name."""

        def _sniffed(self, result):  # type: ignore[no-untyped-def]
            decided.append(result.hostname)

    conn = Probe(ctx=None)  # type: ignore[arg-type]
    conn.transport = FakeTransport()
    conn.state = connection._PEEKING
    for i in range(0, len(stream), chunk):
        conn.data_received(stream[i : i + chunk])
        if decided:
            return calls, decided[0]
    return calls, None


def test_a_hello_in_one_byte_pieces_is_recognised_at_its_last_byte(monkeypatch) -> None:
    hello = client_hello("app.example")
    calls, name = _feed(monkeypatch, hello, 1)
    assert name == "app.example"
    assert calls < 20, f"{calls} parses for {len(hello)} one-byte segments"


def test_a_head_in_small_pieces_is_recognised_at_its_end(monkeypatch) -> None:
    head = b"GET / HTTP/1.1\r\nHost: app.example\r\nUser-Agent: t\r\n\r\n"
    calls, name = _feed(monkeypatch, head, 3)
    assert name == "app.example"
    assert calls < 10


def test_a_dribbling_hostile_client_costs_few_parses(monkeypatch) -> None:
    # A TLS record header promising a 60 KB hello, then tiny junk records, a byte at a time.
    stream = b"\x16\x03\x01\x00\x05" + b"\x01\x00\xea\x60\x03" + b"\x16\x03\x01\x00\x01x" * 12000
    calls, name = _feed(monkeypatch, stream[: MAX_SNIFF_BYTES + 10], 1)
    assert name is None
    assert calls < 40, f"{calls} parses of a growing 64 KiB buffer"
