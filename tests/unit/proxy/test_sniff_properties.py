"""Property tests: proxy.sniff on built, real, mutated and random ClientHellos and HTTP heads.

Invariants: `sniff()` never fails internally; every proper prefix of a valid hello/head is
"need more"; the full one gives exactly the name it was built with; a final answer does not
change when more bytes arrive; a name is only ever one that is in the bytes.
"""

from __future__ import annotations

import ssl
import time

from hypothesis import example, given
from hypothesis import strategies as st

from proxy.sniff import MAX_SNIFF_BYTES, SniffResult, sniff

from .tls_hello import (
    ext,
    frame,
    handshake_message,
    hello_body,
    hello_message,
    real_client_hello,
    sni_ext,
    u16,
)

TLS13 = real_client_hello("api.example.com")
TLS12 = real_client_hello("legacy.example.org", ssl.TLSVersion.TLSv1_2)

_names = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9-]{1,12}){0,4}\.?", fullmatch=True
)
_visible = st.binary(min_size=1, max_size=40).filter(lambda b: all(0x21 <= c < 0x7F for c in b))
_sni_names = st.one_of(_names.map(str.encode), _visible)
#: ESNI and ECH drafts 08-12: a hello carrying one hides its real name (no name is taken).
_HIDERS = (0xFFCE, 0xFE08, 0xFE09, 0xFE0A, 0xFE0B, 0xFE0C)


def _ok(result: SniffResult) -> SniffResult:
    assert isinstance(result, SniffResult)
    assert not result.note.startswith("internal"), result
    assert result.protocol in ("tls", "http", "other", "unknown")
    assert result.hostname is None or result.complete, result
    return result


def _stable(data: bytes, result: SniffResult, more: bytes) -> None:
    """A final answer is final: more bytes change neither protocol nor name."""
    if result.complete:
        later = _ok(sniff(data + more))
        assert (later.complete, later.protocol, later.hostname) == (
            True,
            result.protocol,
            result.hostname,
        ), (data, result, later)


# ----------------------------------------------------------------- built ClientHellos


@st.composite
def hellos(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """(stream, name): a valid ClientHello with one SNI name, framed at a random size. The
    expected name is None when an ESNI / draft-ECH extension says the real one is hidden."""
    name = draw(_sni_names)
    others = draw(
        st.lists(
            st.tuples(
                st.integers(1, 0xFFFF).filter(lambda t: t != 0xFE0D) | st.sampled_from(_HIDERS),
                st.binary(max_size=60),
            ),
            max_size=6,
            unique_by=lambda e: e[0],
        )
    )
    exts = [ext(t, d) for t, d in others]
    exts.insert(draw(st.integers(0, len(exts))), sni_ext(name))
    body = hello_body(
        b"".join(exts),
        session_id=draw(st.binary(max_size=32)),
        suites=draw(st.binary(min_size=1, max_size=40).map(lambda b: b * 2)),
        compression=draw(st.binary(min_size=1, max_size=3)),
    )
    size = draw(st.sampled_from([1, 2, 7, 100, 16384]) | st.integers(1, 16384))
    version = draw(st.sampled_from([b"\x03\x01", b"\x03\x03", b"\x03\x00"]))
    hidden = any(t in _HIDERS for t, _ in others)
    return frame(hello_message(body), size, version), None if hidden else name.decode()


@given(hellos(), st.binary(max_size=20))
def test_built_hello_gives_its_name_and_every_prefix_waits(
    hello: tuple[bytes, str | None], more: bytes
) -> None:
    stream, name = hello
    result = _ok(sniff(stream))
    assert (result.complete, result.protocol, result.hostname) == (True, "tls", name), result
    assert _ok(sniff(stream + more)).hostname == name  # early data after the hello
    step = max(1, len(stream) // 64)  # ~64 prefixes: every prefix is covered across runs
    for cut in range(1, len(stream), step):
        prefix = _ok(sniff(stream[:cut]))
        assert not prefix.complete and prefix.protocol == "tls", (cut, prefix)


@given(hellos(), st.data())
def test_mutated_hello_never_fails_and_stays_final(
    hello: tuple[bytes, str], data: st.DataObject
) -> None:
    stream = bytearray(hello[0])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(stream) - 1))
        how = data.draw(st.sampled_from(["set", "inc", "dec", "insert", "delete", "u16"]))
        if how == "set":
            stream[pos] = data.draw(st.integers(0, 255))
        elif how in ("inc", "dec"):  # off-by-one lengths
            stream[pos] = (stream[pos] + (1 if how == "inc" else -1)) % 256
        elif how == "insert":
            stream[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del stream[pos : pos + data.draw(st.integers(1, 8))]
        else:  # a lying 16-bit length: 0, max, or anything
            stream[pos : pos + 2] = u16(
                data.draw(st.sampled_from([0, 1, 0xFFFF]) | st.integers(0, 0xFFFF))
            )
        if not stream:
            stream = bytearray(b"\x16")
    mutated = bytes(stream)
    result = _ok(sniff(mutated))
    if result.hostname is not None:  # from the reassembled record payloads
        assert result.hostname.encode() in handshake_message(mutated)
    _stable(mutated, result, data.draw(st.binary(min_size=1, max_size=10)))
    cut = data.draw(st.integers(0, len(mutated)))
    if not result.complete:
        assert not _ok(sniff(mutated[:cut])).complete


@given(st.sampled_from([TLS13, TLS12]), st.integers(1, 400), st.data())
def test_real_hello_reframed_anywhere(real: bytes, size: int, data: st.DataObject) -> None:
    message = handshake_message(real)
    stream = frame(message, size)
    expected = "api.example.com" if real is TLS13 else "legacy.example.org"
    assert _ok(sniff(stream)).hostname == expected
    cut = data.draw(st.integers(1, len(stream) - 1))
    assert not _ok(sniff(stream[:cut])).complete


def _ext_bodies(n: int, size: int) -> bytes:
    return b"".join(ext(0x1000 + i, b"\x00" * size) for i in range(n))


@given(st.integers(0, 16), st.data())
def test_huge_extension_counts(size: int, data: st.DataObject) -> None:
    # up to 16,000 tiny extensions, the SNI last: bounded work, and the name, or "too big"
    last = sni_ext(b"last.example")
    # As many as the 16-bit extensions length can carry with the SNI after them.
    count = data.draw(st.integers(0, (0xFFFF - len(last)) // (4 + size)))
    message = hello_message(hello_body(_ext_bodies(count, size) + last))
    stream = frame(message)
    started = time.process_time()  # CPU time: the work done, not the wait for a core
    result = _ok(sniff(stream))
    assert time.process_time() - started < 1.0
    if len(stream) <= MAX_SNIFF_BYTES:
        assert result.hostname == "last.example", result
    else:  # decided from the declared length: cannot fit the bound
        assert result.complete and result.hostname is None and "bound" in result.note


# ----------------------------------------------------------------- random bytes


@given(
    st.sampled_from([b"", b"\x16", b"\x16\x03\x01", b"\x16\x03\x03\x40\x00\x01", b"GET ", b"\x80"]),
    st.binary(max_size=300),
    st.binary(min_size=1, max_size=8),
)
def test_random_bytes(first: bytes, rest: bytes, more: bytes) -> None:
    data = first + rest
    result = _ok(sniff(data))
    if result.hostname is not None:
        assert result.hostname.encode() in data
    _stable(data, result, more)


@given(
    st.binary(min_size=1, max_size=64),
    st.sampled_from([b"\x16\x03\x01", b"GET /", b"\x16\x03\x01\x40\x00\x01\x00\xff\xff", b"A"]),
)
def test_max_size_input_is_cheap(pattern: bytes, first: bytes) -> None:
    data = first + pattern * (MAX_SNIFF_BYTES // len(pattern) + 2)
    started = time.process_time()  # CPU time: the work done, not the wait for a core
    result = _ok(sniff(data))
    _ok(sniff(data[: MAX_SNIFF_BYTES - 1]))
    assert time.process_time() - started < 1.0
    assert result.complete  # at the bound every answer is final


# ----------------------------------------------------------------- HTTP heads

_tokens = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", fullmatch=True)
_values = st.from_regex(r"[\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?", fullmatch=True)
_headers = st.lists(st.tuples(_tokens.filter(lambda t: t.lower() != "host"), _values), max_size=8)


@given(
    st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT", "X-CUSTOM"]),
    st.from_regex(r"/[\x21-\x7e]{0,30}", fullmatch=True),
    st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
    _names,
    st.one_of(st.none(), st.integers(0, 65535).map(str), st.just("")),
    st.sampled_from(["Host", "host", "HOST", "hOsT"]),
    _headers,
    st.integers(0, 8),
    st.binary(max_size=20),
)
@example("GET", "/", "HTTP/1.1", "a.example", None, "Host", [], 0, b"")
def test_http_head_gives_its_host(
    method: str,
    target: str,
    version: str,
    name: str,
    port: str | None,
    host_key: str,
    headers: list[tuple[str, str]],
    at: int,
    body: bytes,
) -> None:
    authority = name if port is None else f"{name}:{port}"
    lines = [f"{k}: {v}" for k, v in headers]
    lines.insert(min(at, len(lines)), f"{host_key}: {authority}")
    head = f"{method} {target} {version}\r\n" + "".join(f"{h}\r\n" for h in lines) + "\r\n"
    data = head.encode()
    result = _ok(sniff(data + body))
    assert (result.complete, result.protocol, result.hostname) == (True, "http", name), result
    step = max(1, len(data) // 40)
    for cut in range(1, len(data), step):
        prefix = _ok(sniff(data[:cut]))
        assert not prefix.complete and prefix.protocol == "http", (cut, prefix)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                [b"GET / HTTP/1.1", b"\r\n", b"\n", b"\r", b"Host: ", b"host:", b"a.example"]
            ),
            st.sampled_from(
                [b" ", b"\t", b":", b"[", b"]", b"@", b"\x00", b"http://", b"CONNECT "]
            ),
            st.binary(max_size=4),
        ),
        max_size=20,
    ).map(b"".join),
    st.binary(min_size=1, max_size=6),
)
def test_http_like_junk(data: bytes, more: bytes) -> None:
    result = _ok(sniff(data))
    if result.hostname is not None:
        assert result.protocol == "http"
        assert result.hostname.encode() in data
        # one Host line, exactly: two would be ambiguous
        head = data[: data.find(b"\r\n\r\n")]
        assert sum(1 for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"host:")) == 1
    _stable(data, result, more)
