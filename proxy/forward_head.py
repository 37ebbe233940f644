"""The request head a client sends to the explicit (forward) proxy, read strictly.

Sans-IO: `parse_request_head(bytes)` takes one complete head (request line, header lines,
the blank line) and returns a `ForwardRequest`, or raises `HeadError` with the status to
answer. Nothing the client sends is forwarded before this function accepted it.

Why our own checks before h11: request smuggling lives in the places where two parsers
disagree, and h11 (rightly, as a server) is lenient in some of them: it unfolds obs-fold
lines and accepts bare-LF line endings, and lets Transfer-Encoding win over Content-Length
silently. A forward proxy sits between two parsers, so every such ambiguity is refused
here, with a 4xx and the connection closed:

- line endings other than CRLF (bare LF, bare CR), NUL and other control bytes;
- obs-fold (a header line starting with space or tab), whitespace before a header's colon;
- more than `MAX_HEADERS` header lines, a head over `MAX_HEAD_BYTES` (431);
- Content-Length together with Transfer-Encoding, more than one of either, a
  Content-Length that is not a plain decimal number, Transfer-Encoding in HTTP/1.0 (400),
  a transfer coding other than exactly `chunked` (501);
- request targets a forward proxy must not act on: origin-form and `*` (400: the client
  took us for an origin), `https://` absolute-form (501: asking the proxy to originate
  TLS), other schemes (400), userinfo or a fragment in the URI, an authority with no host
  or a port outside 1-65535; CONNECT to anything but `host:port` (400).

h11 then parses the head (header name tokens, field values, the HTTP version, one Host) so
that the structure is h11's, and the framing we forward by is the one checked above.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import h11

from rules.names import canonical_hostname

#: The largest request head accepted, blank line included.
MAX_HEAD_BYTES = 64 * 1024
#: The most header lines one request head may have.
MAX_HEADERS = 100
#: Content-Length digits accepted (up to 10**18 - 1 bytes: more than any real body).
_MAX_LENGTH_DIGITS = 18

_BAD_CTL = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"
_TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VISIBLE = bytes(range(0x21, 0x7F))
_DIGITS = b"0123456789"
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+;="


class HeadError(Exception):
    """A request head refused: `status` to answer (4xx, or 501), `error` the RFC 9209
    Proxy-Status error type, and the message (one line) saying why."""

    def __init__(self, status: int, message: str, error: str = "http_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.error = error


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """One accepted request head.

    `host` is canonical (a lower-case A-label name, or an IP address without brackets,
    IPv4-mapped IPv6 folded to IPv4), `port` the target's (the default 80 for `http://`
    without one). `path` is the origin-form target to forward (`/` at least; empty for
    CONNECT). `headers` are h11's: lower-case names, values as received. `chunked` and
    `content_length` are the body's framing (neither: no body).
    """

    method: str
    host: str
    port: int
    is_ip: bool
    path: str
    http_version: str
    headers: tuple[tuple[bytes, bytes], ...]
    content_length: int | None
    chunked: bool
    expect_continue: bool

    @property
    def is_connect(self) -> bool:
        return self.method == "CONNECT"

    @property
    def authority(self) -> str:
        """`host:port` as it goes in a Host header or an absolute-form URI (IPv6 in [])."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def find_head_end(buf: bytes | bytearray) -> int:
    """The length of the complete head at the start of `buf` (through its blank line),
    or -1 while it is incomplete. Raises HeadError (431) once `buf` holds more than
    `MAX_HEAD_BYTES` without a complete head, and (400) at once when what arrived has a
    bare LF: a bare-LF blank line is not an end, and such a head is never read two ways
    nor waited for."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
    if end >= 0:
        return end + 4
    if buf.count(b"\n") != buf.count(b"\r\n"):
        raise HeadError(400, "bare LF in the request head")
    if len(buf) >= MAX_HEAD_BYTES:
        raise HeadError(431, f"request head over {MAX_HEAD_BYTES} bytes")
    return -1


def parse_request_head(data: bytes) -> ForwardRequest:
    """Read one complete request head (see the module doc); raises HeadError.

    `data` must be exactly the head: it ends with the blank line, and nothing follows.
    """
    if len(data) > MAX_HEAD_BYTES:
        raise HeadError(431, f"request head over {MAX_HEAD_BYTES} bytes")
    if not data.endswith(b"\r\n\r\n") or data.find(b"\r\n\r\n") != len(data) - 4:
        raise HeadError(400, "not one complete request head")
    if len(data.translate(None, _BAD_CTL)) != len(data):
        raise HeadError(400, "control byte in the request head")
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf:
        raise HeadError(400, "bare CR in the request head")
    if data.count(b"\n") != crlf:
        raise HeadError(400, "bare LF in the request head")
    lines = data[:-4].split(b"\r\n")
    request_line, fields = lines[0], lines[1:]
    if len(fields) > MAX_HEADERS:
        raise HeadError(431, f"more than {MAX_HEADERS} header lines")
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for line in fields:
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "obs-fold (continuation line) in the request head")
        colon = line.find(b":")
        if colon <= 0 or line[:colon].translate(None, _TCHARS):
            raise HeadError(400, "malformed header line")
        name = line[:colon].lower()
        if name == b"content-length":
            lengths.append(line[colon + 1 :].strip(b" \t"))
        elif name == b"transfer-encoding":
            codings.append(line[colon + 1 :].strip(b" \t"))
    method, target, version = _request_line(request_line)
    content_length, chunked = _framing(lengths, codings, version)

    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise HeadError(400, f"malformed request head: {exc}") from None
    if not isinstance(event, h11.Request):  # the checks above leave h11 nothing to wait for
        raise HeadError(400, "malformed request head")
    headers = tuple((bytes(n), bytes(v)) for n, v in event.headers)
    expect = any(n == b"expect" and v.lower() == b"100-continue" for n, v in headers)

    if method == "CONNECT":
        host, port, is_ip = _authority(target, default_port=None)
        path = ""
    else:
        host, port, is_ip, path = _absolute_target(target)
    if method == "CONNECT" and (content_length or chunked):
        raise HeadError(400, "CONNECT with a request body")
    return ForwardRequest(
        method=method,
        host=host,
        port=port,
        is_ip=is_ip,
        path=path,
        http_version=version,
        headers=headers,
        content_length=content_length,
        chunked=chunked,
        expect_continue=expect,
    )


def _request_line(line: bytes) -> tuple[str, bytes, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise HeadError(400, "malformed request line")
    method, target, version = parts
    if method.translate(None, _TCHARS) or len(method) > 32:
        raise HeadError(400, "malformed request method")
    if target.translate(None, _VISIBLE):
        raise HeadError(400, "malformed request target")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/"):
            raise HeadError(505, "unsupported HTTP version")
        raise HeadError(400, "malformed request line")
    return method.decode("ascii"), target, version[5:].decode("ascii")


def _framing(lengths: list[bytes], codings: list[bytes], version: str) -> tuple[int | None, bool]:
    """The body's framing from the raw Content-Length and Transfer-Encoding values."""
    if lengths and codings:
        raise HeadError(400, "both Content-Length and Transfer-Encoding")
    if len(lengths) > 1:
        raise HeadError(400, "more than one Content-Length")
    if len(codings) > 1:
        raise HeadError(400, "more than one Transfer-Encoding")
    if codings:
        if version == "1.0":
            raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if codings[0].lower() != b"chunked":
            raise HeadError(501, f"transfer coding not supported: {codings[0]!r}")
        return None, True
    if lengths:
        value = lengths[0]
        if not value or value.translate(None, _DIGITS) or len(value) > _MAX_LENGTH_DIGITS:
            raise HeadError(400, "malformed Content-Length")
        return int(value), False
    return None, False


def _absolute_target(target: bytes) -> tuple[str, int, bool, str]:
    """(host, port, is_ip, origin-form path) of an absolute-form `http://` target."""
    lower = target[:8].lower()
    if target[:1] == b"/" or target == b"*":
        raise HeadError(
            400, "origin-form request: this is a proxy; send the absolute URI (http://host/...)"
        )
    if lower.startswith(b"https://"):
        raise HeadError(501, "https:// through a plain proxy request is not supported: use CONNECT")
    if not lower.startswith(b"http://"):
        raise HeadError(400, "unsupported request target (only http:// absolute URIs)")
    rest = target[7:]
    if b"#" in rest:
        raise HeadError(400, "fragment in the request target")
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    host, port, is_ip = _authority(authority, default_port=80)
    if not path.startswith(b"/"):
        path = b"/" + path
    return host, port, is_ip, path.decode("ascii")


def _authority(text: bytes, default_port: int | None) -> tuple[str, int, bool]:
    """(host, port, is_ip) of `host[:port]` / `[v6][:port]`; the port is required when
    `default_port` is None (CONNECT)."""
    if b"@" in text:
        raise HeadError(400, "userinfo in the request target")
    if text.startswith(b"["):
        close = text.find(b"]")
        if close < 0:
            raise HeadError(400, "bad authority: missing ']'")
        inner, rest = text[1:close].decode("ascii"), text[close + 1 :]
        try:
            addr = ipaddress.IPv6Address(inner)
        except ValueError:
            raise HeadError(400, "bad authority: not an IPv6 address") from None
        if addr.scope_id:
            raise HeadError(400, "bad authority: zone id")
        host, is_ip = str(addr.ipv4_mapped or addr), True
    else:
        colon = text.find(b":")
        raw, rest = (text, b"") if colon < 0 else (text[:colon], text[colon:])
        if not raw or raw.translate(None, _HOST_CHARS):
            raise HeadError(400, "bad authority: no usable host")
        host_text = raw.decode("ascii")
        try:
            host, is_ip = str(ipaddress.IPv4Address(host_text)), True
        except ValueError:
            name = canonical_hostname(host_text)
            if name is None:
                raise HeadError(400, f"bad authority: {host_text!r} is not a usable host") from None
            host, is_ip = name, False
    if not rest:
        if default_port is None:
            raise HeadError(400, "bad authority: CONNECT needs host:port")
        return host, default_port, is_ip
    digits = rest[1:]
    if rest[:1] != b":" or not digits or digits.translate(None, _DIGITS) or len(digits) > 5:
        raise HeadError(400, "bad authority: malformed port")
    port = int(digits)
    if not 1 <= port <= 65535:
        raise HeadError(400, f"bad authority: port {port} out of range")
    return host, port, is_ip
