"""Hostname sniffing from the first bytes a client sends (sans-IO).

The runtime peeks at a redirected connection on ports 80/443: it feeds each read to a
`Sniffer`, which keeps the bytes and calls `sniff()` on the growing prefix whenever it may
have become a whole ClientHello or request head, until the result is `complete` (or the
peek time bound ends: `Sniffer.finish`). The name found is *untrusted input*: it is
returned raw, and the caller canonicalises it (`rules.names.canonical_hostname`) before any
use. Whenever the bytes are ambiguous -- several names, lengths that do not add up, an ECH
outer hello, HTTP heads that different parsers could read differently -- the answer is "no
name" (`hostname=None`), so the connection is decided on its IP: a wrong name is worse than
no name.

`sniff()` never raises and never loops without consuming input; each call costs O(len(data))
(at most `MAX_SNIFF_BYTES` are looked at). `Sniffer` calls it only when the prefix has
doubled or may be complete, so a client that dribbles bytes costs O(log n) parses, not n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Bytes looked at, at most: a ClientHello reassembled from records, or an HTTP head.
MAX_SNIFF_BYTES = 65536

Protocol = Literal["tls", "http", "other", "unknown"]


@dataclass(frozen=True, slots=True)
class SniffResult:
    """What the first bytes say.

    `complete=False`: the prefix may still become a valid ClientHello / HTTP head, feed more
    bytes; `protocol` is then the protocol the prefix is consistent with so far (`"unknown"`
    for no bytes), which is what to use for a REJECT if the peek times out.
    `complete=True`: final; `hostname` is the raw name (str, not canonicalised; HTTP port
    stripped, IPv6 brackets removed) or None, and `note` says why in a few words (for logs).
    """

    complete: bool
    protocol: Protocol
    hostname: str | None
    note: str


def sniff(data: bytes) -> SniffResult:
    """Classify `data` (a stream prefix) and extract the requested hostname if trustworthy."""
    try:
        return _sniff(bytes(data[:MAX_SNIFF_BYTES]), truncated=len(data) >= MAX_SNIFF_BYTES)
    except Exception as exc:  # defence in depth: a sniffing bug must not kill a connection
        return SniffResult(True, "unknown", None, f"internal sniff error: {type(exc).__name__}")


def _sniff(data: bytes, truncated: bool) -> SniffResult:
    if not data:
        return SniffResult(False, "unknown", None, "no bytes yet")
    first = data[0]
    if first == _TLS_HANDSHAKE:
        result = _sniff_tls(data)
    elif first in _TLS_OTHER_CONTENT_TYPES:
        result = _sniff_tls_non_handshake(data)
    elif first & 0x80:
        result = _sniff_sslv2(data)
    elif first in _TCHAR:
        result = _sniff_http(data)
    else:
        result = _other("first byte is neither a TLS record nor an HTTP method")
    if not result.complete and truncated:
        return SniffResult(True, result.protocol, None, "no complete hello/head within bound")
    return result


def _other(note: str) -> SniffResult:
    return SniffResult(True, "other", None, note)


def _need(protocol: Protocol, note: str = "need more bytes") -> SniffResult:
    return SniffResult(False, protocol, None, note)


# --------------------------------------------------------------------------- TLS

_TLS_HANDSHAKE = 22
_TLS_OTHER_CONTENT_TYPES = frozenset({20, 21, 23, 24})  # ccs, alert, app data, heartbeat
_HS_CLIENT_HELLO = 1
_MAX_RECORD = 1 << 14  # RFC 8446 5.1: TLSPlaintext.length MUST NOT exceed 2^14
_EXT_SERVER_NAME = 0
_EXT_ECH = 0xFE0D
#: Earlier ways to hide the real name: ESNI (draft-ietf-tls-esni up to 02) and the ECH
#: drafts 08-12. A server that still speaks one routes by the hidden name, so the visible
#: SNI says no more than the outer name of RFC 9849 ECH does.
_EXT_HIDDEN_NAME_DRAFTS = frozenset({0xFFCE, 0xFE08, 0xFE09, 0xFE0A, 0xFE0B, 0xFE0C})
_SNI_HOST_NAME = 0


def _tls(hostname: str | None, note: str) -> SniffResult:
    return SniffResult(True, "tls", hostname, note)


class _NeedMore(Exception):
    """The declared structure runs past the bytes received so far."""


class _Malformed(Exception):
    """A length or value that no valid ClientHello has; the message is the log note."""


class _Reader:
    """Bounds-checked cursor over a possibly incomplete, length-declared structure.

    `end` is where the enclosing structure *declares* it ends; `avail` is how many bytes
    have arrived. Reading past `end` is malformed (a length lies); reading past `avail`
    only means "wait". Checking `end` first is what lets a lying length be caught before
    its bytes ever arrive.
    """

    __slots__ = ("avail", "buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end
        self.avail = min(len(buf), end)

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise _Malformed(f"{what} runs past its enclosing length")
        if self.pos + n > self.avail:
            raise _NeedMore
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def sub(self, n: int, what: str) -> _Reader:
        """A reader over the next `n` bytes (which may not all have arrived yet)."""
        if self.pos + n > self.end:
            raise _Malformed(f"{what} length runs past its enclosing length")
        reader = _Reader(self.buf, self.pos, self.pos + n)
        self.pos += n
        return reader

    def at_end(self) -> bool:
        return self.pos == self.end


def _sniff_tls_non_handshake(data: bytes) -> SniffResult:
    if len(data) < 2:
        return _need("tls")
    if data[1] != 3:
        return _other("not a TLS record")
    return _tls(None, "first TLS record is not a handshake record")


def _sniff_sslv2(data: bytes) -> SniffResult:
    # SSLv2-compatible CLIENT-HELLO: 2-byte length with the high bit set, then msg type 1.
    if len(data) < 3:
        return _need("unknown")
    if data[2] == 1:
        return _tls(None, "SSLv2-style ClientHello (no extensions, no SNI)")
    return _other("first byte is neither a TLS record nor an HTTP method")


def _reassemble(data: bytes) -> tuple[bytes, int | None] | SniffResult:
    """Concatenate handshake-record payloads from the start of `data`.

    Returns (handshake bytes so far, declared ClientHello body length or None when the
    handshake header has not fully arrived), or a final/need-more result on bad framing.
    Stops reading records once the whole ClientHello is there.
    """
    fragments: list[bytes] = []
    have = 0
    hello_len: int | None = None
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 5]
        if header[0] != _TLS_HANDSHAKE:
            if pos == 0:
                return _other("not a TLS handshake record")
            return _tls(None, "non-handshake record inside the ClientHello")
        if len(header) >= 2 and header[1] != 3:
            return _other("not a TLS record") if pos == 0 else _tls(None, "bad record version")
        if len(header) < 5:
            break
        length = int.from_bytes(header[3:5], "big")
        if length == 0:
            return _tls(None, "zero-length handshake record")
        if length > _MAX_RECORD:
            return _tls(None, "TLS record longer than 2^14")
        fragment = data[pos + 5 : pos + 5 + length]
        fragments.append(fragment)
        have += len(fragment)
        pos += 5 + length
        if hello_len is None and have >= 4:
            head = b"".join(fragments)[:4]
            if head[0] != _HS_CLIENT_HELLO:
                return _tls(None, "first handshake message is not a ClientHello")
            hello_len = int.from_bytes(head[1:4], "big")
            if _min_stream_bytes(hello_len) > MAX_SNIFF_BYTES:
                return _tls(None, "ClientHello larger than the sniff bound")
        if len(fragment) < length or (hello_len is not None and have >= 4 + hello_len):
            break
    return b"".join(fragments), hello_len


def _min_stream_bytes(hello_len: int) -> int:
    """Fewest stream bytes that can carry a ClientHello body of `hello_len` bytes."""
    message = 4 + hello_len
    records = -(-message // _MAX_RECORD)
    return message + 5 * records


def _sniff_tls(data: bytes) -> SniffResult:
    assembled = _reassemble(data)
    if isinstance(assembled, SniffResult):
        return assembled
    handshake, hello_len = assembled
    if hello_len is None:
        if handshake and handshake[0] != _HS_CLIENT_HELLO:
            return _tls(None, "first handshake message is not a ClientHello")
        return _need("tls")
    try:
        return _parse_client_hello(_Reader(handshake, 4, 4 + hello_len))
    except _NeedMore:
        return _need("tls", "ClientHello incomplete")
    except _Malformed as exc:
        return _tls(None, f"malformed ClientHello: {exc}")


def _parse_client_hello(r: _Reader) -> SniffResult:
    r.take(2, "legacy_version")
    r.take(32, "random")
    session_id_len = r.u8("session_id length")
    if session_id_len > 32:
        raise _Malformed("session_id longer than 32")
    r.take(session_id_len, "session_id")
    suites_len = r.u16("cipher_suites length")
    if suites_len < 2 or suites_len % 2:
        raise _Malformed("cipher_suites length is zero or odd")
    r.take(suites_len, "cipher_suites")
    compression_len = r.u8("compression_methods length")
    if compression_len < 1:
        raise _Malformed("no compression method")
    r.take(compression_len, "compression_methods")
    if r.at_end():
        return _tls(None, "ClientHello without extensions (no SNI)")
    extensions = r.sub(r.u16("extensions length"), "extensions")
    if not r.at_end():
        raise _Malformed("bytes after the extensions")

    seen: set[int] = set()
    names: list[str] | None = None
    ech_type: int | None = None
    hidden: int | None = None
    while not extensions.at_end():
        ext_type = extensions.u16("extension type")
        body = extensions.sub(extensions.u16("extension length"), "extension")
        if ext_type in seen:
            raise _Malformed(f"duplicate extension {ext_type:#06x}")
        seen.add(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            names = _parse_server_name(body)
        elif ext_type == _EXT_ECH:
            ech_type = body.u8("encrypted_client_hello type")
        elif ext_type in _EXT_HIDDEN_NAME_DRAFTS:
            hidden = ext_type
        body.take(body.end - body.pos, "extension body")  # wait for it (and skip it)

    # Everything declared has arrived and parsed: only now judge the name.
    if ech_type is not None:
        if ech_type == 0:
            return _tls(None, "ECH outer ClientHello (may be GREASE): SNI is only the public name")
        return _tls(None, f"encrypted_client_hello of type {ech_type} in a cleartext hello")
    if hidden is not None:
        return _tls(None, f"draft ECH / encrypted_server_name extension {hidden:#06x}")
    if names is None:
        return _tls(None, "no server_name extension")
    if not names:
        return _tls(None, "server_name without a host_name entry")
    if len(names) > 1:
        return _tls(None, "several host_name entries in server_name")
    return _tls(names[0], "TLS SNI")


def _parse_server_name(body: _Reader) -> list[str]:
    """RFC 6066 ServerNameList: the host_name entries, raw (ASCII checked)."""
    names = body.sub(body.u16("server_name_list length"), "server_name_list")
    if not body.at_end():
        raise _Malformed("bytes after server_name_list")
    if names.at_end():
        raise _Malformed("empty server_name_list")
    found: list[str] = []
    while not names.at_end():
        name_type = names.u8("name_type")
        name = names.take(names.u16("server name length"), "server name")
        if name_type != _SNI_HOST_NAME:
            continue  # unknown types are length-prefixed in every implementation
        if not name:
            raise _Malformed("empty host_name")
        if name.translate(None, _VISIBLE):
            raise _Malformed("host_name with non-ASCII or control bytes")
        found.append(name.decode("ascii"))
    return found


# --------------------------------------------------------------------------- HTTP

# Character classes as bytes: `value.translate(None, CLASS)` deletes the class's bytes in C,
# so "all bytes in the class" is "nothing is left" (a Python loop per byte costs 20x more).
_TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TCHAR = frozenset(_TCHARS)
_MAX_METHOD = 32  # longer than any registered method; lets binary junk be classified early
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
# Bytes allowed in a reg-name Host (RFC 3986 unreserved + sub-delims minus ",", which is the
# list separator and would make "a, b" look like one name). The caller canonicalises further.
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+;="
_IPV6_CHARS = b"0123456789abcdefABCDEF:."
_VISIBLE = bytes(range(0x21, 0x7F))  # VCHAR: printable ASCII without space
# Controls that may not appear in a head at all (HTAB is allowed, CR/LF checked as pairs).
_BAD_CTL = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"


def _http(hostname: str | None, note: str) -> SniffResult:
    return SniffResult(True, "http", hostname, note)


def _sniff_http(data: bytes) -> SniffResult:
    """Strict reading of an HTTP/1.x request head.

    A hand-written parser rather than h11: `sniff()` is stateless over a growing prefix,
    and h11 is (rightly, as a server) lenient where a policy decision must not be -- it
    unfolds obs-fold lines and accepts bare-LF line endings, and reports a duplicate Host
    only as an error string. Here every such ambiguity means "no name".
    """
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 2]  # keep the CRLF ending the last line

    # The request line ends at the first CR or LF (neither may appear inside it); whether
    # that terminator is a proper CRLF is checked with the rest of the head below.
    line_end = min((i for i in (head.find(b"\r"), head.find(b"\n")) if i >= 0), default=-1)
    request_line = head if line_end < 0 else head[:line_end]
    verdict = _check_request_line(request_line, complete=line_end >= 0)
    if verdict is not None:
        return verdict

    # From here on the request line is complete and valid: this is HTTP.
    if len(head.translate(None, _BAD_CTL)) != len(head):
        return _http(None, "control byte (NUL, ...) in the request head")
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf + (head.endswith(b"\r") and end < 0):
        return _http(None, "bare CR in the request head")
    if head.count(b"\n") != crlf:
        return _http(None, "bare LF in the request head")
    if end < 0:
        return _need("http", "HTTP head incomplete")
    return _parse_head(head[line_end + 2 :], request_line)


def _check_request_line(line: bytes, complete: bool) -> SniffResult | None:
    """None when `line` is a valid request line (so far); else the result to return."""
    sp1 = line.find(b" ")
    method = line if sp1 < 0 else line[:sp1]
    if method.translate(None, _TCHARS):
        return _other("not an HTTP request line")
    if len(method) > _MAX_METHOD:
        return _other("not an HTTP request line (method token too long)")
    if sp1 < 0:
        return _other("not an HTTP request line") if complete else _need("http")
    sp2 = line.find(b" ", sp1 + 1)
    target = line[sp1 + 1 :] if sp2 < 0 else line[sp1 + 1 : sp2]
    if target.translate(None, _VISIBLE):
        return _other("not an HTTP request line (bad request-target)")
    if sp2 < 0:
        return _other("not an HTTP request line") if complete else _need("http")
    version = line[sp2 + 1 :]
    if not complete:
        if any(v.startswith(version) for v in (*_VERSIONS, b"HTTP/2.0")):
            return _need("http")
        return _bad_version(version)
    if not target:
        return _other("not an HTTP request line (empty request-target)")
    if method == b"PRI" and version == b"HTTP/2.0":
        return _other("HTTP/2 prior-knowledge preface (names are HPACK-encoded)")
    if version not in _VERSIONS:
        return _bad_version(version)
    return None


def _bad_version(version: bytes) -> SniffResult:
    """Verdict on a version that is not (a prefix of) HTTP/1.0 or 1.1; the same whether or
    not the line has ended, so that a final answer never changes as bytes arrive."""
    if not version.startswith(b"HTTP/"):
        return _other("not an HTTP request line")
    if b" " in version:
        return _http(None, "malformed request line")
    return _http(None, "unsupported HTTP version")


def _parse_head(fields: bytes, request_line: bytes) -> SniffResult:
    """`fields`: the header lines, each ending in CRLF (no bare CR/LF/NUL, checked)."""
    method, target, version = request_line.split(b" ")
    hosts: list[bytes] = []
    for line in fields.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            return _http(None, "obs-fold (continuation line) in the request head")
        colon = line.find(b":")
        if colon <= 0 or line[:colon].translate(None, _TCHARS):
            return _http(None, "malformed header line")
        if line[:colon].lower() == b"host":
            hosts.append(line[colon + 1 :].strip(b" \t"))
    if len(hosts) > 1:
        return _http(None, "duplicate Host")
    if not hosts:
        return _http(None, f"no Host header ({version.decode()})")
    host = _host_of_authority(hosts[0])
    if host is None:
        return _http(None, "invalid Host header")

    if method == b"CONNECT":
        # A client talking CONNECT to an origin address believes it talks to a proxy; which
        # name the far end would honour is anyone's guess.
        return _http(None, "CONNECT request sent to a transparent destination")
    if target[:1] == b"/" or target == b"*":
        return _http(host, "HTTP Host")
    # absolute-form: the origin MUST use the target's authority and ignore Host (RFC 9112
    # 3.2.2), while naive servers use Host. The name is trusted only when both agree.
    target_host = _host_of_absolute_target(target)
    if target_host is None:
        return _http(None, "unsupported or malformed absolute-form request-target")
    if _same_host(target_host, host):
        return _http(host, "HTTP Host (agrees with absolute-form request-target)")
    return _http(None, "absolute-form request-target and Host disagree")


def _host_of_authority(value: bytes) -> str | None:
    """host of `host[:port]` / `[v6]:port` (raw, port stripped), None when malformed."""
    if value.startswith(b"["):
        close = value.find(b"]")
        inner, rest = value[1:close], value[close + 1 :]
        if close < 0 or not inner or inner.translate(None, _IPV6_CHARS):
            return None
    else:
        colon = value.find(b":")
        inner, rest = (value, b"") if colon < 0 else (value[:colon], value[colon:])
        if not inner or inner.translate(None, _HOST_CHARS):
            return None
    port = rest[1:]  # RFC 3986 allows an empty port ("host:")
    if rest and not (rest[:1] == b":" and len(port) <= 5 and (not port or port.isdigit())):
        return None
    return inner.decode("ascii")


def _host_of_absolute_target(target: bytes) -> str | None:
    lower = target.lower()
    for scheme in (b"http://", b"https://"):
        if lower.startswith(scheme):
            rest = target[len(scheme) :]
            break
    else:
        return None
    cut = min((i for i in (rest.find(c) for c in b"/?#") if i >= 0), default=len(rest))
    authority = rest[:cut]
    if b"@" in authority:  # userinfo: the classic "allowed.example@evil.example" confusion
        return None
    return _host_of_authority(authority)


def _same_host(a: str, b: str) -> bool:
    return a.lower().rstrip(".") == b.lower().rstrip(".")


# --------------------------------------------------------------------------- pacing


class Sniffer:
    """What a client sent before its connection was decided, and when to sniff it.

    `feed(data)` with each read returns the final `SniffResult` as soon as there is one, or
    None ("wait for more"); `finish()` gives the answer on what arrived when waiting ends
    (the peek deadline, the client's EOF). After the result, `hold(data)` keeps what still
    arrives until the connection is relayed, and `take()` hands it all over, in order.

    Each `sniff()` parses the whole prefix again. It runs on the first read (a normal client
    sends its hello or head in one segment), and later only when the prefix has doubled
    since the last parse or the read may have completed it: the blank line that ends an
    HTTP head, or the end of a ClientHello. For TLS that end is found by following the
    record headers as they arrive (each says how long its record is; the first handshake
    header says how long the hello is across all of them), incrementally, so a hello split
    over many records is decided at its last byte, and a client that dribbles bytes costs
    O(log n) full parses plus one linear walk over the record headers.
    """

    __slots__ = ("_buf", "_next_parse", "_records")

    def __init__(self) -> None:
        self._buf: bytes | bytearray = b""
        self._next_parse = 0  # the first read is always parsed
        self._records: _HelloEnd | None = None  # made when a TLS hello needs a second read

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def data(self) -> bytes:
        """Every byte fed or held so far."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> SniffResult | None:
        """Add one read; the final result once known, else None."""
        buf = self._append(data)
        size = len(buf)
        if size < self._next_parse and not self._may_be_complete(buf, len(data)):
            return None
        result = sniff(buf if type(buf) is bytes else bytes(buf))
        if result.complete:
            return result
        self._next_parse = min(2 * size, MAX_SNIFF_BYTES)
        records = self._records
        if records is not None and records.end is not None and size >= records.end:
            records.end = _NEVER  # framing and parser disagree: the doubling bound only
        return None

    def finish(self) -> SniffResult:
        """The final answer on what has arrived (no more will be waited for)."""
        if not self._buf:
            return SniffResult(True, "unknown", None, "no data before the peek ended")
        result = sniff(bytes(self._buf))
        if result.complete:
            return result
        return SniffResult(True, result.protocol, None, "incomplete client hello/head")

    def hold(self, data: bytes) -> None:
        """Keep `data` without sniffing it (it arrived after the decision)."""
        self._append(data)

    def take(self) -> bytes:
        """Everything fed and held, in order; the sniffer is empty afterwards."""
        buf, self._buf = self._buf, b""
        self._records = None
        return buf if type(buf) is bytes else bytes(buf)

    def _append(self, data: bytes) -> bytes | bytearray:
        buf = self._buf
        if not buf:  # the usual first read: kept as it is, no copy
            self._buf = data
            return data
        if type(buf) is bytes:  # a second read: from now on appended in place
            buf = self._buf = bytearray(buf)
        buf += data
        return buf

    def _may_be_complete(self, buf: bytes | bytearray, new: int) -> bool:
        """Whether the last `new` bytes may have completed a hello or head (cheap: it reads
        only record headers, or the last few bytes)."""
        if buf[0] == _TLS_HANDSHAKE:
            records = self._records
            if records is None:
                records = self._records = _HelloEnd()
            return records.reached(buf)
        return b"\r\n\r\n" in buf[-(new + 3) :]


_NEVER = 1 << 62  # an end no stream reaches


class _HelloEnd:
    """Where a ClientHello ends in the stream, learnt from its TLS record headers.

    Record by record as their headers arrive: `handshake` counts the handshake bytes the
    records read so far declare; once the hello's own 4-byte header has arrived (in the
    first records' payloads: `heads`), `target` is the hello's length, and `end` is the
    stream offset of its last byte. Anything a valid hello cannot have (another record
    type, a bad version, a zero or oversize length, another handshake message, a hello
    larger than the sniff bound) answers "parse now": the parser then gives its final
    verdict on it.
    """

    __slots__ = ("end", "handshake", "heads", "next_header", "target")

    def __init__(self) -> None:
        self.next_header = 0
        self.handshake = 0
        self.heads: list[tuple[int, int]] = []  # (payload offset, length) until 4 bytes
        self.target: int | None = None
        self.end: int | None = None

    def reached(self, buf: bytes | bytearray) -> bool:
        """True when `buf` may hold the whole hello, or cannot be the start of one (said
        once: after that only the doubling bound triggers a parse)."""
        size = len(buf)
        while self.end is None:
            if self.target is None and self.heads:
                head = b"".join(buf[start : min(start + n, size)] for start, n in self.heads)
                if len(head) >= 4:
                    body = int.from_bytes(head[1:4], "big")
                    if head[0] != _HS_CLIENT_HELLO or _min_stream_bytes(body) > MAX_SNIFF_BYTES:
                        return self._malformed()
                    self.target = 4 + body
                    if self.handshake >= self.target:  # it ends in the last record read
                        start, n = self.heads[-1]
                        self.end = start + self.target - (self.handshake - n)
                        break
                elif self.handshake >= 4:
                    return False  # its header is still in flight, and so is all after it
            pos = self.next_header
            if pos + 5 > size:
                if (pos < size and buf[pos] != _TLS_HANDSHAKE) or (
                    pos + 1 < size and buf[pos + 1] != 3
                ):
                    return self._malformed()
                return False
            if buf[pos] != _TLS_HANDSHAKE or buf[pos + 1] != 3:
                return self._malformed()
            length = (buf[pos + 3] << 8) | buf[pos + 4]
            if length == 0 or length > _MAX_RECORD:
                return self._malformed()
            before = self.handshake
            self.handshake = before + length
            self.next_header = pos + 5 + length
            if before < 4:
                self.heads.append((pos + 5, length))
            if self.target is not None and self.handshake >= self.target:
                self.end = pos + 5 + self.target - before
        return size >= self.end

    def _malformed(self) -> bool:
        self.end = _NEVER
        return True
