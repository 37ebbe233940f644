"""Client side of upstream proxy handshakes: HTTP CONNECT, SOCKS5, SOCKS4/4a (sans-IO).

The connector in `proxy/` owns the socket: it writes `start()`, feeds every chunk the
upstream sends to `receive()`, writes `Step.send` when there is any, and once `Step.done`
relays, after first handing `Step.leftover` (bytes the upstream sent past its reply, which
belong to the tunnel) to the client. `receive(b"")` means the upstream closed the connection.

Every reply byte is hostile input: versions, reply codes, reserved bytes, address types and
lengths are all checked, the HTTP reply head is bounded, and any deviation raises
`HandshakeError`: the upstream is unusable (the connector tries the next route). A
well-formed reply that refuses the request raises `UpstreamRefused` instead (a subclass): an
HTTP status other than 2xx to CONNECT (407 included), a SOCKS5 method or authentication
refusal or error reply, a SOCKS4 reply 91-93. The upstream answered; its refusal is the
policy, so the connector ends the connection there and never falls through to the next route.
Error messages say what the upstream answered -- status line, SOCKS reply code and its
meaning -- and never contain credentials (nor anything derived from them).

Invalid arguments (a destination that cannot be expressed in the protocol, over-long
credentials) also raise `HandshakeError`, at construction: to the caller that is one more
route that cannot be used.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from typing import Protocol

import h11

from pac.addr import unmap

#: Largest HTTP reply head accepted from an upstream proxy.
MAX_REPLY_HEAD = 16 * 1024

# Names as the policy hands them over: canonical (A-labels), so LDH plus "_" and ".".
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


class HandshakeError(Exception):
    """The upstream garbled or dropped the handshake, or the route cannot carry the target."""


class UpstreamRefused(HandshakeError):
    """The upstream answered the handshake with a well-formed refusal of this request."""


@dataclass(frozen=True, slots=True)
class Step:
    """What to do after feeding upstream bytes to a handshake."""

    send: bytes = b""  # bytes to write to the upstream now
    done: bool = False  # tunnel established
    leftover: bytes = b""  # bytes after the reply that already belong to the tunnel


class UpstreamHandshake(Protocol):
    def start(self) -> bytes:
        """The first bytes to send to the upstream (call once)."""
        ...

    def receive(self, data: bytes) -> Step:
        """Feed what the upstream sent (b"" = it closed); raises HandshakeError."""
        ...


# --------------------------------------------------------------------------- shared


def _destination(host: str, port: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """The target as an address (IPv4-mapped IPv6 made IPv4) or a validated ASCII name."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise HandshakeError(f"invalid destination port {port!r}")
    if not isinstance(host, str):
        raise HandshakeError("invalid destination host")
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:
        if address != unmap(address):
            return unmap(address)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise HandshakeError("an IPv6 scope id cannot be sent to an upstream proxy")
        return address
    if not 0 < len(host) <= 255 or not set(host) <= _NAME_CHARS:
        raise HandshakeError(f"invalid destination host name {_printable(host, 80)!r}")
    return host


def _printable(text: str | bytes, limit: int) -> str:
    """Upstream-controlled text made safe for one log line."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in text[:limit])
    return text


class _Base:
    """Start/receive bookkeeping common to every handshake."""

    __slots__ = ("_buf", "_finished", "_started")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._started = False
        self._finished = False  # done or failed: no more input is expected

    def start(self) -> bytes:
        if self._started:
            raise RuntimeError("start() called twice")
        self._started = True
        return self._first_bytes()

    def receive(self, data: bytes) -> Step:
        if not self._started:
            raise RuntimeError("receive() before start()")
        if self._finished:
            raise RuntimeError("receive() after the handshake ended")
        try:
            if not data:
                raise HandshakeError(f"upstream closed the connection {self._waiting_for()}")
            return self._receive(data)
        except HandshakeError:
            self._finished = True
            raise

    def _first_bytes(self) -> bytes:
        raise NotImplementedError

    def _receive(self, data: bytes) -> Step:
        raise NotImplementedError

    def _waiting_for(self) -> str:
        raise NotImplementedError

    def _finish(self, consumed: int) -> Step:
        self._finished = True
        leftover = bytes(self._buf[consumed:])
        self._buf.clear()
        return Step(done=True, leftover=leftover)


# --------------------------------------------------------------------------- HTTP CONNECT


def http_connect(
    host: str, port: int, username: str | None = None, password: str | None = None
) -> UpstreamHandshake:
    """`CONNECT host:port HTTP/1.1` with Host (and Proxy-Authorization: Basic if given)."""
    return _HttpConnect(host, port, username, password)


class _HttpConnect(_Base):
    """The reply is read with h11 (client role): after a 2xx to CONNECT h11 switches
    protocols and `trailing_data` holds the first tunnel bytes. h11 bounds an *incomplete*
    head; a complete one that arrives in one chunk is bounded here by counting."""

    __slots__ = ("_authority", "_conn", "_credentials", "_fed")

    def __init__(self, host: str, port: int, username: str | None, password: str | None):
        super().__init__()
        target = _destination(host, port)
        shown = f"[{target}]" if isinstance(target, ipaddress.IPv6Address) else str(target)
        self._authority = f"{shown}:{port}"
        self._credentials: str | None = None
        if username is not None:
            if ":" in username:  # RFC 7617: the user-id cannot contain a colon
                raise HandshakeError("proxy username contains ':' (not allowed by Basic auth)")
            raw = f"{username}:{password or ''}".encode()
            self._credentials = "Basic " + base64.b64encode(raw).decode("ascii")
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_REPLY_HEAD)
        self._fed = 0

    def __repr__(self) -> str:
        return f"<http_connect {self._authority}>"

    def _first_bytes(self) -> bytes:
        headers = [("Host", self._authority)]
        if self._credentials is not None:
            headers.append(("Proxy-Authorization", self._credentials))
        request = h11.Request(method="CONNECT", target=self._authority, headers=headers)
        return self._conn.send(request) + (self._conn.send(h11.EndOfMessage()) or b"")

    def _waiting_for(self) -> str:
        return "before answering CONNECT"

    def _receive(self, data: bytes) -> Step:
        self._fed += len(data)
        self._buf += data[: MAX_REPLY_HEAD - len(self._buf)]  # only for error messages
        self._conn.receive_data(data)
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                reason = str(exc).split(":", 1)[0]
                if reason == "Receive buffer too long":
                    raise HandshakeError(
                        f"upstream reply head to CONNECT exceeds {MAX_REPLY_HEAD} bytes"
                    ) from None
                raise HandshakeError(
                    f"malformed reply to CONNECT ({reason}): {self._first_line()!r}"
                ) from None
            if event is h11.NEED_DATA:
                return Step()
            if isinstance(event, h11.InformationalResponse):
                # 100 Continue and the like: the real answer follows. They count towards
                # the head's bound, or an upstream could send them for ever.
                self._check_head_size()
                continue
            if isinstance(event, h11.Response):
                return self._answered(event)
            raise HandshakeError(f"unexpected reply to CONNECT: {type(event).__name__}")

    def _answered(self, response: h11.Response) -> Step:
        status = f"{response.status_code} {_printable(response.reason, 80)}".rstrip()
        if not 200 <= response.status_code < 300:
            raise UpstreamRefused(f"upstream answered CONNECT with {status}")
        try:
            switched = self._conn.next_event() is h11.PAUSED  # h11 switched protocols
        except h11.ProtocolError:
            switched = False
        if not switched:
            raise HandshakeError(f"upstream answered CONNECT with {status}, not a tunnel")
        leftover = self._check_head_size()
        self._finished = True
        return Step(done=True, leftover=leftover)

    def _check_head_size(self) -> bytes:
        """What h11 holds past the events read so far; raises when the bytes before it
        (the reply head, with every 1xx before it) exceed the bound."""
        unread, _closed = self._conn.trailing_data
        if self._fed - len(unread) > MAX_REPLY_HEAD:
            raise HandshakeError(f"upstream reply head to CONNECT exceeds {MAX_REPLY_HEAD} bytes")
        return bytes(unread)

    def _first_line(self) -> str:
        """What the upstream said first: its first line, or hex when that is binary (a
        SOCKS or TLS server answering an HTTP request)."""
        line = bytes(self._buf).split(b"\n", 1)[0].rstrip(b"\r")
        if all(0x20 <= b < 0x7F for b in line[:100]):
            return line[:100].decode("ascii")
        return "bytes " + self._buf[:16].hex(" ")


# --------------------------------------------------------------------------- SOCKS5

_SOCKS5_REPLIES = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}
_NO_AUTH, _USER_PASS, _NO_ACCEPTABLE = 0x00, 0x02, 0xFF


def socks5(
    host: str, port: int, username: str | None = None, password: str | None = None
) -> UpstreamHandshake:
    """SOCKS5 CONNECT (RFC 1928): a name goes as DOMAIN (the upstream resolves it), an IP
    literal as IPv4/IPv6; RFC 1929 username/password is offered when a username is given."""
    return _Socks5(host, port, username, password)


class _Socks5(_Base):
    __slots__ = ("_auth", "_request", "_state", "_target")

    def __init__(self, host: str, port: int, username: str | None, password: str | None):
        super().__init__()
        target = _destination(host, port)
        self._target = f"{target}:{port}"
        if isinstance(target, ipaddress.IPv4Address):
            address = b"\x01" + target.packed
        elif isinstance(target, ipaddress.IPv6Address):
            address = b"\x04" + target.packed
        else:
            name = target.encode("ascii")
            address = b"\x03" + bytes([len(name)]) + name
        self._request = b"\x05\x01\x00" + address + port.to_bytes(2, "big")
        self._auth: bytes | None = None
        if username is not None:
            user, secret = username.encode(), (password or "").encode()
            if not 0 < len(user) < 256:
                raise HandshakeError("SOCKS5 username must be 1 to 255 bytes")
            if len(secret) > 255:
                raise HandshakeError("SOCKS5 password must be at most 255 bytes")
            self._auth = b"\x01" + bytes([len(user)]) + user + bytes([len(secret)]) + secret
        self._state = "method"

    def __repr__(self) -> str:
        return f"<socks5 {self._target}>"

    def _first_bytes(self) -> bytes:
        methods = bytes([_NO_AUTH]) if self._auth is None else bytes([_NO_AUTH, _USER_PASS])
        return b"\x05" + bytes([len(methods)]) + methods

    def _waiting_for(self) -> str:
        return {
            "method": "before choosing a SOCKS5 authentication method",
            "auth": "before answering SOCKS5 username/password authentication",
            "reply": "before answering the SOCKS5 CONNECT request",
        }[self._state]

    def _receive(self, data: bytes) -> Step:
        self._buf += data
        if self._state == "method":
            return self._method()
        if self._state == "auth":
            return self._authenticated()
        return self._reply()

    def _exactly(self, n: int, what: str) -> bytes | None:
        """The `n`-byte reply once complete; bytes beyond it are a protocol violation (the
        upstream cannot know our next message before we send it)."""
        if len(self._buf) < n:
            return None
        if len(self._buf) > n:
            raise HandshakeError(f"upstream sent unexpected bytes after its SOCKS5 {what}")
        reply = bytes(self._buf)
        self._buf.clear()
        return reply

    def _method(self) -> Step:
        if self._buf[0] != 5:
            raise HandshakeError(f"not a SOCKS5 reply (version byte {self._buf[0]:#04x})")
        reply = self._exactly(2, "method selection")
        if reply is None:
            return Step()
        method = reply[1]
        if method == _NO_AUTH:
            self._state = "reply"
            return Step(send=self._request)
        if method == _USER_PASS and self._auth is not None:
            self._state = "auth"
            return Step(send=self._auth)
        if method == _USER_PASS:
            raise UpstreamRefused("SOCKS5 upstream requires username/password; none configured")
        if method == _NO_ACCEPTABLE:
            raise UpstreamRefused("SOCKS5 upstream accepts none of the offered auth methods")
        raise HandshakeError(f"SOCKS5 upstream chose auth method {method:#04x}, not offered")

    def _authenticated(self) -> Step:
        if self._buf[0] != 1:
            raise HandshakeError(
                f"bad SOCKS5 username/password reply (version byte {self._buf[0]:#04x})"
            )
        reply = self._exactly(2, "authentication reply")
        if reply is None:
            return Step()
        if reply[1] != 0:
            raise UpstreamRefused(
                f"SOCKS5 username/password authentication failed (status {reply[1]:#04x})"
            )
        self._state = "reply"
        return Step(send=self._request)

    def _reply(self) -> Step:
        buf = self._buf
        if buf[0] != 5:
            raise HandshakeError(f"not a SOCKS5 reply (version byte {buf[0]:#04x})")
        if len(buf) < 2:
            return Step()
        if buf[1] != 0:
            # Any error code is the server's answer about this request (microsocks says
            # "general failure" for a name it cannot resolve): a refusal, never a fall-through.
            meaning = _SOCKS5_REPLIES.get(buf[1], "unassigned reply code")
            raise UpstreamRefused(
                f"SOCKS5 upstream refused CONNECT to {self._target}: {buf[1]:#04x} {meaning}"
            )
        if len(buf) < 4:
            return Step()
        if buf[2] != 0:
            raise HandshakeError(f"bad SOCKS5 reply (reserved byte {buf[2]:#04x})")
        atyp = buf[3]
        if atyp == 1:
            length = 4 + 4 + 2
        elif atyp == 4:
            length = 4 + 16 + 2
        elif atyp == 3:
            if len(buf) < 5:
                return Step()
            if buf[4] == 0:
                raise HandshakeError("bad SOCKS5 reply (empty bound domain name)")
            length = 4 + 1 + buf[4] + 2
        else:
            raise HandshakeError(f"bad SOCKS5 reply (address type {atyp:#04x})")
        if len(buf) < length:
            return Step()
        return self._finish(length)


# --------------------------------------------------------------------------- SOCKS4 / 4a

_SOCKS4_REPLIES = {
    0x5B: "request rejected or failed",
    0x5C: "request rejected: the SOCKS server cannot reach identd on the client",
    0x5D: "request rejected: identd reports a different user-id",
}


def socks4(host: str, port: int) -> UpstreamHandshake:
    """SOCKS4 CONNECT for an IPv4 address, SOCKS4a (the name sent, upstream resolves) for a
    name. IPv6 cannot be expressed in either: HandshakeError here, at construction."""
    return _Socks4(host, port)


class _Socks4(_Base):
    __slots__ = ("_request", "_target")

    def __init__(self, host: str, port: int):
        super().__init__()
        target = _destination(host, port)
        self._target = f"{target}:{port}"
        if isinstance(target, ipaddress.IPv6Address):
            raise HandshakeError(f"SOCKS4 cannot carry an IPv6 destination ({target})")
        head = b"\x04\x01" + port.to_bytes(2, "big")
        if isinstance(target, ipaddress.IPv4Address):
            self._request = head + target.packed + b"\x00"  # empty user-id
        else:  # 4a: IP 0.0.0.1 (0.0.0.x, x != 0) says "the name follows the user-id"
            self._request = head + b"\x00\x00\x00\x01" + b"\x00" + target.encode() + b"\x00"

    def __repr__(self) -> str:
        return f"<socks4 {self._target}>"

    def _first_bytes(self) -> bytes:
        return self._request

    def _waiting_for(self) -> str:
        return "before answering the SOCKS4 CONNECT request"

    def _receive(self, data: bytes) -> Step:
        buf = self._buf
        buf += data
        if buf[0] != 0:
            raise HandshakeError(f"not a SOCKS4 reply (version byte {buf[0]:#04x})")
        if len(buf) < 2:
            return Step()
        if buf[1] != 0x5A:
            meaning = _SOCKS4_REPLIES.get(buf[1])
            if meaning is None:  # not a SOCKS4 answer: a garbled reply, not a refusal
                raise HandshakeError(f"bad SOCKS4 reply: {buf[1]:#04x} unknown reply code")
            raise UpstreamRefused(
                f"SOCKS4 upstream refused CONNECT to {self._target}: {buf[1]:#04x} {meaning}"
            )
        if len(buf) < 8:
            return Step()
        return self._finish(8)
