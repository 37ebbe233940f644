"""proxy.handshake: upstream CONNECT / SOCKS5 / SOCKS4(a) handshakes, fed hostile replies."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable

import h11
import pytest

from proxy.handshake import (
    MAX_REPLY_HEAD,
    HandshakeError,
    Step,
    UpstreamHandshake,
    http_connect,
    socks4,
    socks5,
)

SECRET = "s3cr3t-pässword"
SECRET_MARKERS = (SECRET, base64.b64encode(f"alice:{SECRET}".encode()).decode())


def feed(hs: UpstreamHandshake, reply: bytes, bytewise: bool) -> tuple[Step, list[bytes]]:
    """Feed `reply` whole or one byte at a time, as a connector would: once a step is done,
    the bytes not yet fed belong to the tunnel too. Returns the last step (its leftover
    extended with those bytes) and what the handshake asked to send."""
    chunks = [reply[i : i + 1] for i in range(len(reply))] if bytewise and reply else [reply]
    sent: list[bytes] = []
    step = Step()
    for i, chunk in enumerate(chunks):
        step = hs.receive(chunk)
        if step.send:
            sent.append(step.send)
        if step.done:
            assert not step.send
            return Step(done=True, leftover=step.leftover + b"".join(chunks[i + 1 :])), sent
    return step, sent


def refused(hs: UpstreamHandshake, reply: bytes, bytewise: bool = False) -> str:
    with pytest.raises(HandshakeError) as info:
        feed(hs, reply, bytewise)
    message = str(info.value)
    for marker in SECRET_MARKERS:
        assert marker not in message
    return message


# --------------------------------------------------------------------------- HTTP CONNECT


def parse_request(raw: bytes) -> h11.Request:
    server = h11.Connection(h11.SERVER)
    server.receive_data(raw)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert isinstance(server.next_event(), h11.EndOfMessage)
    return request


@pytest.mark.parametrize(
    ("host", "authority"),
    [
        ("www.example.com", b"www.example.com:443"),
        ("203.0.113.7", b"203.0.113.7:443"),
        ("2001:db8::7", b"[2001:db8::7]:443"),
        ("[2001:db8::7]", b"[2001:db8::7]:443"),
        ("::ffff:203.0.113.7", b"203.0.113.7:443"),
    ],
)
def test_connect_request(host: str, authority: bytes) -> None:
    raw = http_connect(host, 443).start()
    assert raw == b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n"
    request = parse_request(raw)
    assert request.method == b"CONNECT" and request.target == authority


def test_connect_credentials_are_basic_utf8() -> None:
    raw = http_connect("a.example", 8443, "alice", SECRET).start()
    headers = dict(parse_request(raw).headers)
    scheme, _, token = headers[b"proxy-authorization"].partition(b" ")
    assert scheme == b"Basic"
    assert base64.b64decode(token).decode("utf-8") == f"alice:{SECRET}"
    assert headers[b"host"] == b"a.example:8443"
    empty = http_connect("a.example", 1, "bob", None).start()
    assert base64.b64encode(b"bob:") in empty
    assert b"Proxy-Authorization" not in http_connect("a.example", 1).start()


def test_connect_refuses_a_username_with_a_colon() -> None:
    with pytest.raises(HandshakeError) as info:
        http_connect("a.example", 443, "al:ice", SECRET)
    assert "al:ice" not in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(
    ("reply", "leftover"),
    [
        (b"HTTP/1.1 200 Connection established\r\n\r\n", b""),
        (b"HTTP/1.0 200 Connection established\r\nProxy-Agent: x\r\n\r\n", b""),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n\x16\x03\x03tunnel", b"\x16\x03\x03tunnel"),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nSSH-2.0-x\r\n",
            b"SSH-2.0-x\r\n",
        ),
    ],
)
def test_connect_established(reply: bytes, leftover: bytes, bytewise: bool) -> None:
    hs = http_connect("a.example", 443, "alice", SECRET)
    hs.start()
    step, sent = feed(hs, reply, bytewise)
    assert step.done and sent == []
    assert step.leftover == leftover
    with pytest.raises(RuntimeError):
        hs.receive(b"more")


def test_connect_bytewise_leftover_accumulates_in_order() -> None:
    hs = http_connect("a.example", 443)
    hs.start()
    reply = b"HTTP/1.1 200 OK\r\n\r\n"
    for byte in reply[:-1]:
        assert hs.receive(bytes([byte])) == Step()
    assert hs.receive(b"\nABC") == Step(done=True, leftover=b"ABC")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b'Proxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n',
            "407 Proxy Authentication Required",
        ),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "403 Forbidden"),
        (b"HTTP/1.0 502 Bad Gateway\r\nContent-Length: 5\r\n\r\noops!", "502 Bad Gateway"),
        (b"HTTP/1.1 503\r\n\r\n", "503"),
        (b"HTTP/1.1 302 Found\r\nLocation: http://x/\r\n\r\n", "302 Found"),
        (b"HTTP/1.1 403 no\x7f\x1bway\r\n\r\n", "403 no??way"),
    ],
)
def test_connect_refused_with_status(reply: bytes, expected: str) -> None:
    hs = http_connect("a.example", 443, "alice", SECRET)
    hs.start()
    message = refused(hs, reply, bytewise=True)
    assert f"answered CONNECT with {expected}" in message
    with pytest.raises(RuntimeError):
        hs.receive(b"x")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "SSH-2.0-OpenSSH_9.6"),
        (b"HTTP/2 200\r\n\r\n", "HTTP/2 200"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "2000"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "malformed"),
        (b"\x05\x00", "bytes 05 00"),  # a SOCKS5 server
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "malformed"),
    ],
)
def test_connect_malformed_replies(reply: bytes, expected: str) -> None:
    hs = http_connect("a.example", 443, "alice", SECRET)
    hs.start()
    assert expected in refused(hs, reply)


def test_connect_huge_head_in_pieces() -> None:
    hs = http_connect("a.example", 443)
    hs.start()
    assert hs.receive(b"HTTP/1.1 200 OK\r\n") == Step()
    with pytest.raises(HandshakeError, match=f"exceeds {MAX_REPLY_HEAD}"):
        for _ in range(100):
            hs.receive(b"X-Pad: " + b"a" * 1000 + b"\r\n")


def test_connect_huge_head_in_one_chunk() -> None:
    hs = http_connect("a.example", 443)
    hs.start()
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * MAX_REPLY_HEAD + b"\r\n\r\n"
    assert f"exceeds {MAX_REPLY_HEAD}" in refused(hs, head + b"tunnel")


@pytest.mark.parametrize("per_chunk", [1, 500])
def test_connect_endless_1xx_replies_count_towards_the_head_bound(per_chunk: int) -> None:
    """Each 1xx is a complete event, so h11's own bound never trips: without counting them
    an upstream could keep the handshake (and a CPU) busy until the connect timeout."""
    hs = http_connect("a.example", 443)
    hs.start()
    chunk = b"HTTP/1.1 100 Continue\r\n\r\n" * per_chunk
    with pytest.raises(HandshakeError, match=f"exceeds {MAX_REPLY_HEAD}"):
        for _ in range(2 * MAX_REPLY_HEAD // len(chunk) + 2):
            hs.receive(chunk)


def test_connect_head_just_under_the_bound_is_accepted() -> None:
    hs = http_connect("a.example", 443)
    hs.start()
    head = b"HTTP/1.1 200 OK\r\nX-Pad: \r\n\r\n"
    head = head.replace(b"X-Pad: ", b"X-Pad: " + b"a" * (MAX_REPLY_HEAD - len(head)))
    assert len(head) == MAX_REPLY_HEAD
    assert hs.receive(head + b"tail") == Step(done=True, leftover=b"tail")


def test_connect_upstream_closes_early() -> None:
    hs = http_connect("a.example", 443)
    hs.start()
    hs.receive(b"HTTP/1.1 200")
    assert "closed" in refused(hs, b"")


# --------------------------------------------------------------------------- SOCKS5


def socks5_reply(code: int = 0, bound: bytes = b"\x01\x00\x00\x00\x00", port: int = 0) -> bytes:
    return b"\x05" + bytes([code]) + b"\x00" + bound + port.to_bytes(2, "big")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("www.example.com", b"\x03\x0fwww.example.com"),
        ("203.0.113.7", b"\x01\xcb\x00\x71\x07"),
        ("2001:db8::7", b"\x04" + bytes.fromhex("20010db8000000000000000000000007")),
        ("[2001:db8::7]", b"\x04" + bytes.fromhex("20010db8000000000000000000000007")),
        ("::ffff:203.0.113.7", b"\x01\xcb\x00\x71\x07"),
    ],
)
@pytest.mark.parametrize("bytewise", [False, True])
def test_socks5_no_auth(host: str, address: bytes, bytewise: bool) -> None:
    hs = socks5(host, 443)
    assert hs.start() == b"\x05\x01\x00"
    step, sent = feed(hs, b"\x05\x00", bytewise)
    assert not step.done
    assert sent == [b"\x05\x01\x00" + address + b"\x01\xbb"]
    step, sent = feed(hs, socks5_reply(port=1234) + b"early", bytewise)
    assert step.done and sent == []
    assert step.leftover == b"early"


@pytest.mark.parametrize(
    "bound",
    [
        b"\x01\xc0\x00\x02\x01",
        b"\x04" + b"\x20" * 16,
        b"\x03\x0bproxy.local",
        b"\x03\x01x",
    ],
)
def test_socks5_bound_address_types(bound: bytes) -> None:
    hs = socks5("a.example", 80)
    hs.start()
    hs.receive(b"\x05\x00")
    reply = socks5_reply(bound=bound, port=80)
    for byte in reply[:-1]:
        assert hs.receive(bytes([byte])) == Step()
    assert hs.receive(reply[-1:] + b"\x00\x01") == Step(done=True, leftover=b"\x00\x01")


@pytest.mark.parametrize("bytewise", [False, True])
def test_socks5_username_password(bytewise: bool) -> None:
    hs = socks5("a.example", 443, "alice", SECRET)
    assert hs.start() == b"\x05\x02\x00\x02"
    step, sent = feed(hs, b"\x05\x02", bytewise)
    secret = SECRET.encode()
    assert sent == [b"\x01\x05alice" + bytes([len(secret)]) + secret]
    step, sent = feed(hs, b"\x01\x00", bytewise)
    assert sent == [b"\x05\x01\x00\x03\x09a.example\x01\xbb"]
    step, sent = feed(hs, socks5_reply(), bytewise)
    assert step == Step(done=True)


def test_socks5_with_credentials_accepts_no_auth_choice() -> None:
    hs = socks5("a.example", 443, "alice", SECRET)
    hs.start()
    assert hs.receive(b"\x05\x00").send.startswith(b"\x05\x01\x00\x03")


def test_socks5_empty_password_is_sent_as_zero_length() -> None:
    hs = socks5("a.example", 443, "alice")
    hs.start()
    assert hs.receive(b"\x05\x02").send == b"\x01\x05alice\x00"


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (1, "general SOCKS server failure"),
        (2, "connection not allowed by ruleset"),
        (3, "network unreachable"),
        (4, "host unreachable"),
        (5, "connection refused"),
        (6, "TTL expired"),
        (7, "command not supported"),
        (8, "address type not supported"),
        (9, "unassigned"),
        (0xFF, "unassigned"),
    ],
)
def test_socks5_reply_codes(code: int, meaning: str) -> None:
    hs = socks5("a.example", 443, "alice", SECRET)
    hs.start()
    hs.receive(b"\x05\x02")
    hs.receive(b"\x01\x00")
    hs.receive(b"\x05")
    message = refused(hs, bytes([code]))  # known as soon as the code byte arrives
    assert f"{code:#04x} {meaning}" in message
    assert "a.example:443" in message


@pytest.mark.parametrize(
    ("stage_replies", "bad", "expected"),
    [
        ([], b"\x04\x00", "version byte 0x04"),
        ([], b"HTTP/1.1 400 Bad Request\r\n\r\n", "version byte 0x48"),
        ([], b"\x05\xff", "none of the offered"),
        ([], b"\x05\x01", "chose auth method 0x01"),
        ([], b"\x05\x00\x05", "unexpected bytes"),
        ([b"\x05\x02"], b"\x05\x00", "username/password reply (version byte 0x05)"),
        ([b"\x05\x02"], b"\x01\x01", "authentication failed (status 0x01)"),
        ([b"\x05\x02"], b"\x01\x00\x05", "unexpected bytes"),
        ([b"\x05\x02", b"\x01\x00"], b"\x04\x00", "version byte 0x04"),
        ([b"\x05\x02", b"\x01\x00"], b"\x05\x00\x01\x01", "reserved byte 0x01"),
        ([b"\x05\x02", b"\x01\x00"], b"\x05\x00\x00\x02", "address type 0x02"),
        ([b"\x05\x02", b"\x01\x00"], b"\x05\x00\x00\x03\x00", "empty bound domain"),
        ([b"\x05\x02", b"\x01\x00"], b"\x05\x00\x00\x01\x01", "closed"),
        ([b"\x05\x02", b"\x01\x00"], b"", "closed"),
        ([b"\x05\x02"], b"", "closed"),
        ([], b"", "closed"),
    ],
)
def test_socks5_hostile_replies(stage_replies: list[bytes], bad: bytes, expected: str) -> None:
    # bytes past a reply can only be told from the next reply when they arrive together
    for bytewise in (False,) if expected == "unexpected bytes" else (False, True):
        hs = socks5("a.example", 443, "alice", SECRET)
        hs.start()
        for reply in stage_replies:
            assert hs.receive(reply).send
        if expected == "closed" and bad:
            feed(hs, bad, bytewise)
            bad = b""
        message = refused(hs, bad, bytewise)
        assert expected in message


def test_socks5_requires_auth_without_credentials() -> None:
    hs = socks5("a.example", 443)
    hs.start()
    assert "requires username/password" in refused(hs, b"\x05\x02")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"host": "a" * 256, "port": 1}, "invalid destination host"),
        ({"host": "", "port": 1}, "invalid destination host"),
        ({"host": "bücher.example", "port": 1}, "invalid destination host"),
        ({"host": "a.example\r\nX: y", "port": 1}, "invalid destination host"),
        ({"host": "a.example", "port": 0}, "invalid destination port"),
        ({"host": "a.example", "port": 65536}, "invalid destination port"),
        ({"host": "a.example", "port": True}, "invalid destination port"),
        ({"host": "fe80::1%eth0", "port": 1}, "scope id"),
        ({"host": "a.example", "port": 1, "username": ""}, "username"),
        ({"host": "a.example", "port": 1, "username": "u" * 256}, "username"),
        ({"host": "a.example", "port": 1, "username": "u", "password": "p" * 256}, "password"),
    ],
)
def test_socks5_invalid_arguments(kwargs: dict, expected: str) -> None:
    with pytest.raises(HandshakeError, match=expected):
        socks5(**kwargs)


@pytest.mark.parametrize("make", [http_connect, socks5, socks4])
def test_invalid_destination_for_every_protocol(make: Callable[..., UpstreamHandshake]) -> None:
    with pytest.raises(HandshakeError):
        make("a b", 443)
    with pytest.raises(HandshakeError):
        make("a.example", -1)


@pytest.mark.parametrize("make", [http_connect, socks5, socks4])
def test_misuse_is_a_programming_error(make: Callable[..., UpstreamHandshake]) -> None:
    hs = make("a.example", 443)
    with pytest.raises(RuntimeError):
        hs.receive(b"x")
    hs.start()
    with pytest.raises(RuntimeError):
        hs.start()


# --------------------------------------------------------------------------- SOCKS4 / 4a


def test_socks4_ipv4_request() -> None:
    assert socks4("203.0.113.7", 443).start() == b"\x04\x01\x01\xbb\xcb\x00\x71\x07\x00"
    assert socks4("::ffff:203.0.113.7", 80).start() == b"\x04\x01\x00\x50\xcb\x00\x71\x07\x00"


def test_socks4a_name_request() -> None:
    assert socks4("a.example", 443).start() == (
        b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00a.example\x00"
    )


@pytest.mark.parametrize("host", ["2001:db8::1", "[2001:db8::1]", "::1"])
def test_socks4_refuses_ipv6_at_construction(host: str) -> None:
    with pytest.raises(HandshakeError, match="IPv6"):
        socks4(host, 443)


@pytest.mark.parametrize("bytewise", [False, True])
def test_socks4_granted(bytewise: bool) -> None:
    hs = socks4("a.example", 443)
    hs.start()
    step, sent = feed(hs, b"\x00\x5a\x01\xbb\x00\x00\x00\x00HELLO", bytewise)
    assert step.done and sent == []
    assert step.leftover == b"HELLO"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"\x00\x5b", "0x5b request rejected or failed"),
        (b"\x00\x5c", "0x5c request rejected: the SOCKS server cannot reach identd"),
        (b"\x00\x5d", "0x5d request rejected: identd reports a different user-id"),
        (b"\x00\x00", "0x00 unknown reply code"),
        (b"\x04\x5a\x00\x00\x00\x00\x00\x00", "version byte 0x04"),
        (b"\x05\x00", "version byte 0x05"),
        (b"\x00\x5a\x01", "closed"),
        (b"", "closed"),
    ],
)
def test_socks4_hostile_replies(reply: bytes, expected: str) -> None:
    for bytewise in (False, True):
        hs = socks4("203.0.113.7", 443)
        hs.start()
        if expected == "closed" and reply:
            feed(hs, reply, bytewise)
            reply = b""
        assert expected in refused(hs, reply, bytewise)


# --------------------------------------------------------------------------- fuzzing


_GOOD_REPLIES: list[tuple[Callable[[], UpstreamHandshake], list[bytes]]] = [
    (lambda: http_connect("a.example", 443, "alice", SECRET), [b"HTTP/1.1 200 OK\r\n\r\nxy"]),
    (lambda: socks5("a.example", 443, "alice", SECRET), [b"\x05\x02", b"\x01\x00", socks5_reply()]),
    (lambda: socks5("2001:db8::1", 443), [b"\x05\x00", socks5_reply(bound=b"\x03\x02ab")]),
    (lambda: socks4("a.example", 443), [b"\x00\x5a\x00\x00\x00\x00\x00\x00"]),
]


def test_fuzzed_replies_raise_only_handshake_errors() -> None:
    rng = random.Random(1928)
    outcomes = {"done": 0, "error": 0, "waiting": 0}
    for i in range(3000):
        make, replies = _GOOD_REPLIES[i % len(_GOOD_REPLIES)]
        hs = make()
        hs.start()
        blob = bytearray(b"".join(replies))
        for _ in range(rng.randint(0, 3)):
            if blob:
                blob[rng.randrange(len(blob))] = rng.randrange(256)
        blob = blob[: rng.randint(0, len(blob))] if rng.random() < 0.3 else blob
        outcome = "waiting"
        try:
            pos = 0
            while pos < len(blob):
                size = rng.randint(1, 4)
                step = hs.receive(bytes(blob[pos : pos + size]))
                pos += size
                if step.done:
                    assert len(step.leftover) <= len(blob)
                    outcome = "done"
                    break
        except HandshakeError as exc:
            assert SECRET not in str(exc)
            outcome = "error"
        outcomes[outcome] += 1
    assert all(outcomes.values()), outcomes  # the fuzzer reached every outcome
