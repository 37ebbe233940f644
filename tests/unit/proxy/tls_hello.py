"""ClientHello material for the sniffing tests: real ones from Python's `ssl` module (no
network: the handshake runs into a MemoryBIO), and a small builder for hand-made ones."""

from __future__ import annotations

import ssl


def u8(n: int) -> bytes:
    return n.to_bytes(1, "big")


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def real_client_hello(
    server_hostname: str | None, maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
) -> bytes:
    """The first flight Python's TLS client sends (TLS records, as on the wire)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:  # waiting for a ServerHello: the ClientHello is out
        return outgoing.read()
    raise AssertionError("a TLS handshake completed without a server")


def handshake_message(records: bytes) -> bytes:
    """Concatenated payloads of the TLS records in `records` (well-formed input only)."""
    out, pos = b"", 0
    while pos < len(records):
        length = int.from_bytes(records[pos + 3 : pos + 5], "big")
        out += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return out


def frame(message: bytes, size: int = 16384, version: bytes = b"\x03\x01") -> bytes:
    """`message` cut into handshake records of at most `size` bytes."""
    return b"".join(
        b"\x16" + version + u16(len(message[i : i + size])) + message[i : i + size]
        for i in range(0, len(message), size)
    )


def ext(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + u16(len(data)) + data


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(u8(name_type) + u16(len(n)) + n for n in names)
    return ext(0, u16(len(entries)) + entries)


def hello_body(
    extensions: bytes | None,
    session_id: bytes = b"\x22" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
    version: bytes = b"\x03\x03",
) -> bytes:
    body = version + b"\x11" * 32 + u8(len(session_id)) + session_id
    body += u16(len(suites)) + suites + u8(len(compression)) + compression
    if extensions is not None:
        body += u16(len(extensions)) + extensions
    return body


def hello_message(body: bytes) -> bytes:
    return b"\x01" + u24(len(body)) + body


def built_hello(extensions: bytes | None, **kwargs: bytes) -> bytes:
    """A hand-made ClientHello in one record."""
    return frame(hello_message(hello_body(extensions, **kwargs)))


def split_extensions(message: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(ClientHello body up to the extensions, [(type, data)...]) of a well-formed message."""
    body = message[4:]
    pos = 34
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    prefix, exts_len = body[:pos], int.from_bytes(body[pos : pos + 2], "big")
    exts, cursor = [], pos + 2
    while cursor < pos + 2 + exts_len:
        ext_type = int.from_bytes(body[cursor : cursor + 2], "big")
        length = int.from_bytes(body[cursor + 2 : cursor + 4], "big")
        exts.append((ext_type, body[cursor + 4 : cursor + 4 + length]))
        cursor += 4 + length
    return prefix, exts


def join_extensions(prefix: bytes, exts: list[tuple[int, bytes]]) -> bytes:
    """The ClientHello message rebuilt from `split_extensions` parts."""
    blob = b"".join(ext(t, d) for t, d in exts)
    return hello_message(prefix + u16(len(blob)) + blob)


def with_pq_key_shares(message: bytes) -> bytes:
    """`message` with key_share grown like a post-quantum client's (~3 KB hello).

    OpenSSL 3.0 cannot make one, so the X25519MLKEM768 (0x11ec, 1216 bytes) and ML-KEM-1024
    (0x0202, 1568 bytes) shares are spliced in; padding (21) goes, as clients drop it then.
    """
    prefix, exts = split_extensions(message)
    out = []
    for ext_type, data in exts:
        if ext_type == 21:
            continue
        if ext_type == 51:
            shares = data[2:]
            shares = (
                (u16(0x11EC) + u16(1216) + bytes(range(256)) * 4 + b"\x07" * 192)
                + (u16(0x0202) + u16(1568) + b"\x5a" * 1568)
                + shares
            )
            data = u16(len(shares)) + shares
        out.append((ext_type, data))
    return join_extensions(prefix, out)
