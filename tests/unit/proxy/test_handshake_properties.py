"""Property tests: upstream handshake replies (proxy.handshake), whole, chunked and hostile.

Invariants: a valid reply in any chunking ends the handshake with exactly the bytes after it
as tunnel data (nothing lost, nothing of the reply relayed); anything else is a Step that
waits or a HandshakeError, never another exception; the upstream closing early is an error.
"""

from __future__ import annotations

import itertools

from hypothesis import example, given
from hypothesis import strategies as st

from proxy.handshake import (
    MAX_REPLY_HEAD,
    HandshakeError,
    Step,
    UpstreamHandshake,
    http_connect,
    socks4,
    socks5,
)


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at random points (no empty chunk: b"" means "closed")."""
    if not data:
        return []
    cuts = sorted(
        draw(st.sets(st.integers(1, len(data) - 1), max_size=12)) if len(data) > 1 else []
    )
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run(hs: UpstreamHandshake, chunks: list[bytes], close: bool) -> tuple[Step | None, bytes]:
    """Feed chunks as the connector does; (final step, tunnel bytes) or HandshakeError.

    Returns (None, b"") when the handshake is still waiting after the last chunk and the
    upstream did not close."""
    hs.start()
    for i, chunk in enumerate(chunks):
        step = hs.receive(chunk)
        assert isinstance(step, Step)
        if step.done:
            assert not step.send
            return step, step.leftover + b"".join(chunks[i + 1 :])
    if close:
        hs.receive(b"")
        raise AssertionError("receive(b'') must raise")
    return None, b""


def outcome(hs: UpstreamHandshake, chunks: list[bytes], close: bool) -> object:
    try:
        return run(hs, chunks, close)
    except HandshakeError as exc:
        assert str(exc)
        return exc


# --------------------------------------------------------------------------- HTTP CONNECT

_reason = st.from_regex(r"[A-Za-z ]{0,20}", fullmatch=True)
_field = st.tuples(
    st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True),
    st.from_regex(r"[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?", fullmatch=True),
).filter(lambda f: f[0].lower() not in ("content-length", "transfer-encoding"))


@given(
    st.integers(200, 299),
    _reason,
    st.lists(_field, max_size=5),
    st.lists(st.integers(100, 199).filter(lambda c: c != 101), max_size=2),
    st.binary(max_size=200),
    st.data(),
)
@example(200, "OK", [], [], b"\x16\x03\x03 first tunnel bytes", None)
def test_connect_2xx_keeps_exactly_the_bytes_after_the_head(
    status: int,
    reason: str,
    fields: list[tuple[str, str]],
    informational: list[int],
    tail: bytes,
    data: st.DataObject | None,
) -> None:
    head = b"".join(f"HTTP/1.1 {c} Info\r\n\r\n".encode() for c in informational)
    head += f"HTTP/1.1 {status} {reason}\r\n".encode()
    head += b"".join(f"{k}: {v}\r\n".encode() for k, v in fields) + b"\r\n"
    reply = head + tail
    chunks = data.draw(chunkings(reply)) if data is not None else [reply]
    step, tunnel = run(http_connect("a.example", 443), chunks, close=False)
    assert step is not None and step.done
    assert tunnel == tail


@given(st.integers(0, 999).filter(lambda c: not 100 <= c < 300), st.binary(max_size=50), st.data())
def test_connect_non_2xx_is_refused(status: int, tail: bytes, data: st.DataObject) -> None:
    reply = f"HTTP/1.1 {status:03d} No\r\nX: y\r\n\r\n".encode() + tail
    result = outcome(http_connect("a.example", 443), data.draw(chunkings(reply)), close=True)
    assert isinstance(result, HandshakeError), result


@given(st.binary(max_size=300), st.booleans(), st.data())
@example(b"HTTP/1.1 200 OK\r\n", True, None)
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", True, None)
@example(b"HTTP/1.0 200 OK\n\n", False, None)
def test_connect_any_reply_waits_finishes_or_fails_cleanly(
    reply: bytes, close: bool, data: st.DataObject | None
) -> None:
    for prefix in (b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 "):
        whole = prefix + reply
        chunks = data.draw(chunkings(whole)) if data is not None else ([whole] if whole else [])
        result = outcome(http_connect("a.example", 443), chunks, close)
        if isinstance(result, tuple) and result[0] is not None:
            _step, tunnel = result
            assert whole.endswith(tunnel)
            head = whole[: len(whole) - len(tunnel)]
            assert b"\n\n" in head or b"\r\n\r\n" in head
            assert len(head) <= MAX_REPLY_HEAD


@given(st.integers(MAX_REPLY_HEAD - 100, MAX_REPLY_HEAD + 100), st.booleans())
def test_connect_head_bound(size: int, chunked: bool) -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * size + b"\r\n\r\n"
    chunks = [head[i : i + 4096] for i in range(0, len(head), 4096)] if chunked else [head]
    result = outcome(http_connect("a.example", 443), [*chunks, b"tail"], close=False)
    if len(head) <= MAX_REPLY_HEAD:
        assert isinstance(result, tuple) and result[1] == b"tail", result
    else:
        assert isinstance(result, HandshakeError), len(head)


# --------------------------------------------------------------------------- SOCKS5


@st.composite
def socks5_replies(draw: st.DrawFn) -> bytes:
    atyp = draw(st.sampled_from([1, 3, 4]))
    if atyp == 1:
        addr = draw(st.binary(min_size=4, max_size=4))
    elif atyp == 4:
        addr = draw(st.binary(min_size=16, max_size=16))
    else:
        name = draw(st.binary(min_size=1, max_size=255))
        addr = bytes([len(name)]) + name
    return b"\x05\x00\x00" + bytes([atyp]) + addr + draw(st.binary(min_size=2, max_size=2))


@given(socks5_replies(), st.booleans(), st.binary(max_size=100), st.data())
def test_socks5_success_keeps_exactly_the_bytes_after_the_reply(
    reply: bytes, auth: bool, tail: bytes, data: st.DataObject
) -> None:
    hs = socks5("a.example", 443, *(("alice", "pw") if auth else ()))
    assert hs.start() == (b"\x05\x02\x00\x02" if auth else b"\x05\x01\x00")
    for chunk in data.draw(chunkings(b"\x05\x02" if auth else b"\x05\x00")):
        step = hs.receive(chunk)
    assert step.send  # the auth or the CONNECT request
    if auth:
        for chunk in data.draw(chunkings(b"\x01\x00")):
            step = hs.receive(chunk)
        assert step.send.startswith(b"\x05\x01\x00\x03")
    chunks = data.draw(chunkings(reply + tail))
    for i, chunk in enumerate(chunks):
        step = hs.receive(chunk)
        if step.done:
            assert step.leftover + b"".join(chunks[i + 1 :]) == tail
            return
    raise AssertionError("a complete reply did not finish the handshake")


@given(st.binary(max_size=60), st.binary(max_size=60), st.booleans(), st.data())
def test_socks5_any_bytes_wait_finish_or_fail_cleanly(
    first: bytes, second: bytes, close: bool, data: st.DataObject
) -> None:
    for method in (b"", b"\x05\x00"):
        hs = socks5("2001:db8::1", 1080)
        hs.start()
        try:
            for part in (method, first, second):
                for chunk in data.draw(chunkings(part)):
                    step = hs.receive(chunk)
                    assert isinstance(step, Step)
                    if step.done:
                        return
            if close:
                hs.receive(b"")
                raise AssertionError("receive(b'') must raise")
        except HandshakeError as exc:
            assert str(exc)


@given(st.integers(1, 255), socks5_replies(), st.data())
def test_socks5_refusal_codes_fail(code: int, reply: bytes, data: st.DataObject) -> None:
    hs = socks5("a.example", 443)
    hs.start()
    hs.receive(b"\x05\x00")
    bad = reply[:1] + bytes([code]) + reply[2:]
    result = None
    try:
        for chunk in data.draw(chunkings(bad)):
            result = hs.receive(chunk)
            assert not result.done
    except HandshakeError as exc:
        assert f"{code:#04x}" in str(exc)
    else:
        raise AssertionError(f"reply code {code} accepted: {result}")


# --------------------------------------------------------------------------- SOCKS4


@given(st.binary(min_size=6, max_size=6), st.binary(max_size=50), st.data())
def test_socks4_granted_keeps_the_tail(rest: bytes, tail: bytes, data: st.DataObject) -> None:
    chunks = data.draw(chunkings(b"\x00\x5a" + rest + tail))
    step, tunnel = run(socks4("a.example", 80), chunks, close=False)
    assert step is not None and tunnel == tail


@given(st.binary(max_size=20), st.booleans(), st.data())
def test_socks4_any_bytes_wait_finish_or_fail_cleanly(
    reply: bytes, close: bool, data: st.DataObject
) -> None:
    result = outcome(socks4("192.0.2.1", 80), data.draw(chunkings(reply)), close)
    if isinstance(result, tuple) and result[0] is not None:
        assert reply[:2] == b"\x00\x5a" and result[1] == reply[8:]


# --------------------------------------------------------------------------- construction


@given(
    st.text(max_size=300),
    st.integers(-5, 70000) | st.booleans(),
    st.sampled_from([http_connect, socks5, socks4]),
)
@example("a.example\r\nX: y", 443, http_connect)
@example("[::1]", 443, socks5)
@example("fe80::1%eth0", 443, http_connect)
def test_any_destination_is_built_or_refused(host: str, port: int, make: object) -> None:
    try:
        hs = make(host, port)  # type: ignore[operator]
    except HandshakeError:
        return
    first = hs.start()
    assert isinstance(first, bytes) and first
    if make is http_connect:
        request_line = first.split(b"\r\n", 1)[0]
        assert request_line.count(b" ") == 2 and b"\n" not in request_line
        assert first.count(b"\r\n\r\n") == 1 and first.endswith(b"\r\n\r\n")
