"""proxy.sniff: names from real and hostile ClientHellos and HTTP heads."""

from __future__ import annotations

import random
import ssl
import time

import pytest

from proxy.sniff import MAX_SNIFF_BYTES, SniffResult, sniff

from .tls_hello import (
    built_hello,
    ext,
    frame,
    handshake_message,
    hello_body,
    hello_message,
    join_extensions,
    real_client_hello,
    sni_ext,
    split_extensions,
    u16,
    with_pq_key_shares,
)

TLS13 = real_client_hello("api.example.com")
TLS12 = real_client_hello("legacy.example.org", ssl.TLSVersion.TLSv1_2)
PQ_MESSAGE = with_pq_key_shares(handshake_message(TLS13))


def assert_name(data: bytes, name: str | None, protocol: str = "tls") -> SniffResult:
    result = sniff(data)
    assert result.complete, result
    assert result.protocol == protocol, result
    assert result.hostname == name, result
    assert not result.note.startswith("internal"), result
    return result


def assert_every_prefix_incomplete(data: bytes, protocol: str) -> None:
    for cut in range(1, len(data)):
        result = sniff(data[:cut])
        assert not result.complete, (cut, result)
        assert result.protocol == protocol, (cut, result)
        assert result.hostname is None


# ----------------------------------------------------------------- real ClientHellos


@pytest.mark.parametrize(
    ("hello", "name"),
    [(TLS13, "api.example.com"), (TLS12, "legacy.example.org")],
    ids=["tls13", "tls12"],
)
def test_real_client_hello_split_at_every_byte(hello: bytes, name: str) -> None:
    assert hello[0] == 0x16 and len(hello) > 150
    assert sniff(b"") == SniffResult(False, "unknown", None, "no bytes yet")
    assert_every_prefix_incomplete(hello, "tls")
    assert_name(hello, name)
    # what follows the hello (early data, next records) changes nothing
    assert_name(hello + b"\x17\x03\x03\x00\x05hello", name)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 300])
def test_real_client_hello_reframed_into_small_records(size: int) -> None:
    stream = frame(handshake_message(TLS13), size)
    assert stream.count(b"\x16\x03\x01") >= len(handshake_message(TLS13)) // size
    assert_every_prefix_incomplete(stream, "tls")
    assert_name(stream, "api.example.com")


def test_tls12_hello_reframed_with_record_version_0303() -> None:
    assert_name(frame(handshake_message(TLS12), 7, b"\x03\x03"), "legacy.example.org")


def test_hello_without_server_hostname_has_no_name() -> None:
    result = assert_name(real_client_hello(None), None)
    assert "no server_name" in result.note


def test_post_quantum_sized_hello_in_one_record_and_many() -> None:
    assert len(PQ_MESSAGE) > 3000
    one_record = frame(PQ_MESSAGE)
    assert_every_prefix_incomplete(one_record, "tls")
    assert_name(one_record, "api.example.com")
    for size in (1000, 1499, 16384):
        assert_name(frame(PQ_MESSAGE, size), "api.example.com")


def test_hello_spanning_many_full_records_near_the_bound() -> None:
    prefix, exts = split_extensions(handshake_message(TLS13))
    big = join_extensions(prefix, [*exts[:-1], (0xFAFA, b"\x00" * 50_000)])
    stream = frame(big)
    assert 50_000 < len(stream) < MAX_SNIFF_BYTES
    assert not sniff(stream[:40_000]).complete
    assert_name(stream, "api.example.com")


def test_hello_that_cannot_fit_the_bound_is_decided_from_its_header() -> None:
    # 65,000 bytes of cipher suites plus a 3 KB hello: legal lengths, too big to wait for
    message = hello_message(
        hello_body(sni_ext(b"ok.example"), suites=b"\x13\x01" * 32_500) + PQ_MESSAGE[40:]
    )
    result = assert_name(frame(message)[:200], None)
    assert "bound" in result.note
    # the boundary: a 65,516-byte message takes 4 records, 65,536 stream bytes exactly
    sni = sni_ext(b"edge.example")
    fixed = len(hello_message(hello_body(sni + ext(0xFAFA, b""))))
    fits = hello_message(hello_body(sni + ext(0xFAFA, b"\x00" * (65_516 - fixed))))
    assert len(frame(fits)) == MAX_SNIFF_BYTES
    assert not sniff(frame(fits)[:200]).complete
    assert_name(frame(fits), "edge.example")
    too_big = hello_message(hello_body(sni + ext(0xFAFA, b"\x00" * (65_517 - fixed))))
    assert "bound" in assert_name(frame(too_big)[:200], None).note


def test_one_byte_records_hit_the_byte_bound() -> None:
    # 6 stream bytes per hello byte: the stream bound ends the wait, not the hello.
    prefix, exts = split_extensions(PQ_MESSAGE)
    message = join_extensions(prefix, [*exts, (0xFAFA, b"\x00" * 12_000)])
    stream = frame(message, 1)[:MAX_SNIFF_BYTES]
    assert not sniff(stream[:-1]).complete
    result = assert_name(stream, None)
    assert "bound" in result.note


# ----------------------------------------------------------------- hand-made ClientHellos


def test_builder_sanity_a_plain_hand_made_hello_is_accepted() -> None:
    assert_name(built_hello(sni_ext(b"ok.example")), "ok.example")
    assert_name(built_hello(sni_ext(b"ok.example"), session_id=b""), "ok.example")


def _lengths_lie(message: bytes, offset: int, value: bytes) -> bytes:
    return frame(message[:offset] + value + message[offset + len(value) :])


_GOOD = hello_message(hello_body(sni_ext(b"ok.example") + ext(10, b"\x00\x02\x00\x1d")))
_EXT_OFFSET = 4 + 2 + 32 + 1 + 32 + 2 + 4 + 1 + 1  # first byte of the extensions length


@pytest.mark.parametrize(
    ("stream", "note"),
    [
        (built_hello(None), "without extensions"),
        (built_hello(b""), "no server_name"),
        (built_hello(sni_ext(b"a.example", b"b.example")), "several host_name"),
        (built_hello(sni_ext(b"a.example") + sni_ext(b"b.example")), "duplicate extension"),
        (built_hello(sni_ext(b"x.example", name_type=7)), "without a host_name"),
        (built_hello(sni_ext(b"")), "empty host_name"),
        (built_hello(ext(0, u16(0))), "empty server_name_list"),
        (built_hello(ext(0, u16(9) + b"\x00\x00\x03abc")), "server_name_list length"),
        (built_hello(ext(0, u16(6) + b"\x00\x00\x03abc" + b"z")), "bytes after server_name"),
        (built_hello(sni_ext(b"bad\x00name")), "non-ASCII or control"),
        (built_hello(sni_ext("b\u00fccher.example".encode())), "non-ASCII or control"),
        (built_hello(sni_ext(b"pub.example") + ext(0xFE0D, b"\x00\x00\x01")), "ECH outer"),
        (built_hello(ext(0xFE0D, b"\x00") + sni_ext(b"pub.example")), "ECH outer"),
        (built_hello(sni_ext(b"pub.example") + ext(0xFE0D, b"\x01")), "type 1"),
        (built_hello(sni_ext(b"pub.example") + ext(0xFE0D, b"")), "malformed"),
        (built_hello(sni_ext(b"pub.example") + ext(0xFFCE, b"\x13\x01")), "encrypted_server_name"),
        (built_hello(sni_ext(b"pub.example") + ext(0xFE0A, b"\x00")), "draft ECH"),
        (built_hello(sni_ext(b"ok.example"), session_id=b"\x00" * 33), "session_id longer"),
        (built_hello(sni_ext(b"ok.example"), suites=b""), "cipher_suites"),
        (built_hello(sni_ext(b"ok.example"), suites=b"\x13\x01\x13"), "cipher_suites"),
        (built_hello(sni_ext(b"ok.example"), compression=b""), "compression"),
        (_lengths_lie(_GOOD, _EXT_OFFSET, u16(0xFFFF)), "runs past"),
        (_lengths_lie(_GOOD, _EXT_OFFSET, u16(3)), "malformed"),
        (_lengths_lie(_GOOD, _EXT_OFFSET + 4, u16(200)), "runs past"),
        (frame(hello_message(b"")), "malformed"),
        (frame(hello_message(b"\x03\x03" + b"\x00" * 10)), "runs past"),
        (frame(b"\x02" + _GOOD[1:]), "not a ClientHello"),
        (b"\x16\x03\x01\x00\x00" + frame(_GOOD), "zero-length"),
        (b"\x16\x03\x01\x40\x01" + b"\x00" * 100, "longer than 2^14"),
        (frame(_GOOD[:20]) + b"\x15\x03\x03\x00\x02\x02\x28", "non-handshake record"),
        (frame(_GOOD[:20]) + b"\x16\x02\x00\x00\x10", "bad record version"),
        (b"\x15\x03\x03\x00\x02\x02\x28", "not a handshake"),
        (b"\x17\x03\x03\x00\x10" + b"\x00" * 16, "not a handshake"),
        (b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + b"\x00" * 40, "SSLv2"),
    ],
)
def test_untrusted_client_hellos_give_no_name(stream: bytes, note: str) -> None:
    result = assert_name(stream, None)
    assert note in result.note


def test_hello_record_after_other_junk_is_not_tls() -> None:
    assert_name(b"\x16\x01\x00", None, "other")
    assert_name(b"\x15\x00", None, "other")
    assert_name(b"\x80\x10\x07", None, "other")


def test_lying_length_is_caught_before_its_bytes_arrive() -> None:
    # session_id length 200 > 32: known to be bad after 44 bytes, not after 200 more
    head = frame(hello_message(hello_body(sni_ext(b"ok.example"))))[:200]
    lying = head[:43] + b"\xc8" + head[44:60]
    result = assert_name(lying, None)
    assert "session_id" in result.note


def test_truncated_hello_with_a_trailing_non_handshake_record() -> None:
    # a hello cut short by the client and followed by application data: malformed, final
    stream = frame(_GOOD)[:-10] + b"\x17\x03\x03\x00\x01x"
    assert sniff(stream).complete


# ----------------------------------------------------------------- fuzzing


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        pos = rng.randrange(len(buf)) if buf else 0
        if choice < 0.4 and buf:
            buf[pos] = rng.randrange(256)
        elif choice < 0.6 and len(buf) > 1:
            buf[pos] = (buf[pos] + rng.choice((1, -1, 0x80))) % 256  # off-by-one lengths
        elif choice < 0.8:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            del buf[pos : pos + rng.randint(1, 8)]
    return bytes(buf[: rng.randint(0, len(buf))] if rng.random() < 0.5 else buf)


_FUZZ_SEEDS = [
    TLS13,
    TLS12,
    frame(handshake_message(TLS13), 50),
    built_hello(sni_ext(b"a.example") + ext(0xFE0D, b"\x00\x00\x01")),
    b"GET http://a.example/x HTTP/1.1\r\nHost: a.example:80\r\nAccept: */*\r\n\r\n",
    b"POST / HTTP/1.0\r\nHost: [2001:db8::1]\r\nContent-Length: 0\r\n\r\n",
]


def test_fuzzed_inputs_never_raise_and_final_answers_are_stable() -> None:
    rng = random.Random(20240611)
    started = time.process_time()  # CPU time: the work done, not the wait for a core
    for i in range(4000):
        data = _mutate(rng, _FUZZ_SEEDS[i % len(_FUZZ_SEEDS)])
        result = sniff(data)
        assert isinstance(result, SniffResult)
        assert not result.note.startswith("internal"), (data, result)
        assert result.complete or len(data) < MAX_SNIFF_BYTES
        assert result.hostname is None or result.complete
        if result.complete:
            # a final answer does not change when more bytes arrive (the note may: which
            # of several faults is named first can depend on the later bytes)
            later = sniff(data + bytes(rng.randrange(256) for _ in range(5)))
            assert (later.complete, later.protocol, later.hostname) == (
                True,
                result.protocol,
                result.hostname,
            ), (data, result, later)
        else:
            cut = rng.randint(0, len(data))
            assert not sniff(data[:cut]).complete, (data, cut)
    assert time.process_time() - started < 10


def test_random_bytes_never_raise() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        for first in (b"", b"\x16\x03\x01", b"GET "):
            result = sniff(first + data)
            assert not result.note.startswith("internal"), (first + data, result)


def test_large_junk_is_cheap() -> None:
    started = time.process_time()  # CPU time: the work done, not the wait for a core
    for data in (b"\x16\x03\x01\x40\x00" + b"\x01" * 70_000, b"GET /" + b"a" * 70_000):
        assert sniff(data).complete
        for cut in range(1000, MAX_SNIFF_BYTES, 1000):
            sniff(data[:cut])
    assert time.process_time() - started < 3


# ----------------------------------------------------------------- HTTP


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n", "www.example.com"),
        (b"GET /a?b HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  Www.Example.COM:8080 \r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: www.example.com.\r\n\r\n", "www.example.com."),
        (b"HEAD / HTTP/1.0\r\nHost: 203.0.113.9:80\r\n\r\n", "203.0.113.9"),
        (b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n", "2001:db8::1"),
        (b"GET / HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n", "2001:db8::1"),
        (b"OPTIONS * HTTP/1.1\r\nHost: opt.example\r\n\r\n", "opt.example"),
        (b"GET / HTTP/1.1\r\nHost:\ttabs.example\t\r\n\r\n", "tabs.example"),
        (b"GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n", "a.example"),
    ],
)
def test_http_host(head: bytes, name: str | None) -> None:
    if name is None:  # the mixed-case one: raw, as sent, port stripped
        name = "Www.Example.COM"
    assert_name(head, name, "http")
    assert_name(head + b"body bytes", name, "http")


def test_http_head_split_at_every_byte() -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: up.example\r\nContent-Length: 3\r\n\r\n"
    assert_every_prefix_incomplete(head, "http")
    assert_name(head, "up.example", "http")


@pytest.mark.parametrize(
    ("head", "note"),
    [
        (b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", "duplicate Host"),
        (b"GET / HTTP/1.1\r\nHost: a.example\r\nHOST: a.example\r\n\r\n", "duplicate Host"),
        (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "no Host"),
        (b"GET / HTTP/1.0\r\n\r\n", "no Host"),
        (b"GET / HTTP/1.1\r\nHost: a.example\r\n folded.example\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\r\nX: y\r\n\tHost: a.example\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\r\nHost: a.example\rX: y\r\n\r\n", "bare CR"),
        (b"GET / HTTP/1.1\r\nHost: a.example\nX: y\r\n\r\n", "bare LF"),
        (b"GET / HTTP/1.1\nHost: a.example\n\n", "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: a.exa\x00mple\r\n\r\n", "control byte"),
        (b"GET / HTTP/1.1\r\nX: \x01\r\nHost: a.example\r\n\r\n", "control byte"),
        (b"GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", "malformed header"),
        (b"GET / HTTP/1.1\r\n: a\r\nHost: a.example\r\n\r\n", "malformed header"),
        (b"GET / HTTP/1.1\r\nno colon\r\nHost: a.example\r\n\r\n", "malformed header"),
        (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n", "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: a.example:80x\r\n\r\n", "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: a.example:1234567\r\n\r\n", "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: user@a.example\r\n\r\n", "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: [2001:db8::1\r\n\r\n", "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: [zz::1]\r\n\r\n", "invalid Host"),
        (b"GET / HTTP/1.1\r\nHost: b\xc3\xbccher.example\r\n\r\n", "invalid Host"),
        (b"GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "disagree"),
        (b"GET http://a.example@b.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", "absolute-form"),
        (b"GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", "absolute-form"),
        (b"GET http://a.example/ HTTP/1.0\r\n\r\n", "no Host"),
        (b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", "CONNECT"),
        (b"GET / HTTP/1.2\r\nHost: a.example\r\n\r\n", "unsupported HTTP version"),
        (b"GET / HTTP/3\r\nHost: a.example\r\n\r\n", "unsupported HTTP version"),
        (b"GET / HTTP/1.1 \r\nHost: a.example\r\n\r\n", "malformed request line"),
    ],
)
def test_untrusted_http_heads_give_no_name(head: bytes, note: str) -> None:
    result = assert_name(head, None, "http")
    assert note in result.note


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n", "a.example"),
        (b"GET HTTP://A.EXAMPLE.:80?q HTTP/1.1\r\nHost: a.example:80\r\n\r\n", "a.example"),
        (b"GET https://[2001:db8::2]/ HTTP/1.1\r\nHost: [2001:db8::2]\r\n\r\n", "2001:db8::2"),
    ],
)
def test_absolute_form_is_trusted_only_when_target_and_host_agree(head: bytes, name: str) -> None:
    assert_name(head, name, "http")


def test_bare_line_endings_are_caught_before_the_head_ends() -> None:
    assert_name(b"GET / HTTP/1.1\nHost: a.example\n", None, "http")
    assert_name(b"GET / HTTP/1.1\r\nHost: a\rb", None, "http")
    assert not sniff(b"GET / HTTP/1.1\r\nHost: a\r").complete


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x00\x00\x00\x10binary",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b" GET / HTTP/1.1\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\n",
        b"GET / FTP/1.1\r\n",
        b"A" * 40,
        b"GET\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"HELO mail.example\r\n",
        b"GET /\xff HTTP/1.1\r\n",
    ],
)
def test_other_protocols(data: bytes) -> None:
    assert_name(data, None, "other")


def test_http_prefixes_are_incomplete_until_decidable() -> None:
    for data in (b"G", b"GET", b"GET ", b"GET /x", b"GET /x ", b"GET /x HTTP/1.", b"PRI * HTTP/2"):
        result = sniff(data)
        assert result == SniffResult(False, "http", None, result.note), data


def test_oversize_http_head() -> None:
    filler = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    head = b"GET / HTTP/1.1\r\nHost: a.example\r\n" + filler * 70
    assert not sniff(head[:60_000]).complete
    result = assert_name(head, None, "http")
    assert "bound" in result.note
    # a head that ends only after the bound is no better
    assert_name(head + b"\r\n", None, "http")
    # a long head inside the bound is fine
    long_head = b"GET / HTTP/1.1\r\n" + filler * 60 + b"Host: a.example\r\n\r\n"
    assert_name(long_head, "a.example", "http")
