"""The bytes a REJECT puts on the wire (README, "On the wire").

Plain HTTP gets a `403` whose one-line body names the host and the reason, so a developer
sees *why* in curl's output; TLS gets a fatal `access_denied` alert, the one thing a TLS
client will show without a certificate; anything else is reset by the caller (no bytes).

The host and reason reaching these functions may come from the client (a sniffed name) or
from a PAC script, so both are sanitised: no CR/LF or other control/format character can
reach the wire (no header or log-line injection), and the length is bounded.
"""

from __future__ import annotations

import unicodedata

MAX_HOST_CHARS = 255
MAX_REASON_CHARS = 300

_TLS_ALERT = 21
_ALERT_FATAL = 2
_ACCESS_DENIED = 49


def sanitise(text: str, limit: int) -> str:
    """`text` with every non-printable character (Unicode categories C* and Z* other than a
    plain space: controls, CR/LF, bidi overrides, line separators) replaced by `?`, and cut
    to `limit` characters (the cut marked with `...`)."""
    cleaned = "".join(
        ch if ch == " " or not unicodedata.category(ch).startswith(("C", "Z")) else "?"
        for ch in text[: limit + 1]
    )
    if len(cleaned) > limit:
        cleaned = cleaned[: max(limit - 3, 0)] + "..."
    return cleaned


def http_forbidden(host: str, reason: str) -> bytes:
    """A complete `HTTP/1.1 403 Forbidden` response that closes the connection."""
    body = (
        f"Connections to {sanitise(host, MAX_HOST_CHARS)} are forbidden by policy: "
        f"{sanitise(reason, MAX_REASON_CHARS)}\n"
    ).encode("utf-8", "replace")  # lone surrogates become "?"
    head = (
        "HTTP/1.1 403 Forbidden\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    return head + body


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

#: The name this proxy gives itself in `Proxy-Status` and `Via`.
PROXY_NAME = "airgap-proxy"


def proxy_status(error: str, details: str) -> bytes:
    """An RFC 9209 `Proxy-Status` field value: our name, the error type (a token from the
    RFC's registry) and `details` as a structured-field string (printable ASCII only, backslash
    and `"` escaped; anything else becomes `?`)."""
    text = sanitise(details, MAX_REASON_CHARS)
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    quoted = safe.replace("\\", "\\\\").replace('"', '\\"')
    return f'{PROXY_NAME}; error={error}; details="{quoted}"'.encode("ascii")


def proxy_error(status: int, error: str, host: str, message: str) -> bytes:
    """A complete response of the explicit proxy that closes the connection: `status` with
    a `Proxy-Status` naming `error`, and a one-line body. A 403 says what port 80's does
    (`Connections to HOST are forbidden by policy: REASON`)."""
    if status == 403:
        line = (
            f"Connections to {sanitise(host, MAX_HOST_CHARS)} are forbidden by policy: "
            f"{sanitise(message, MAX_REASON_CHARS)}\n"
        )
    elif host:
        line = f"{sanitise(host, MAX_HOST_CHARS)}: {sanitise(message, MAX_REASON_CHARS)}\n"
    else:
        line = f"{sanitise(message, MAX_REASON_CHARS)}\n"
    body = line.encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n".encode("ascii")
        + b"Proxy-Status: "
        + proxy_status(error, message)
        + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
        + f"Content-Length: {len(body)}\r\n".encode("ascii")
        + b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head + body


def tls_access_denied_alert(client_hello_prefix: bytes | None) -> bytes:
    """A TLS record holding one fatal `access_denied` (49) alert.

    Record version: the highest version the client can read before any negotiation. The
    ClientHello's `legacy_version` (what a pre-1.3 server would have answered with) capped at
    TLS 1.2's 0x0303 (RFC 8446 5.1: every TLS 1.3 record but the first ClientHello says
    0x0303); falling back to the client's record version, then 0x0303. SSL 3.0 clients get
    0x0300. Anything not of the form 3.x is ignored.
    """
    return bytes(
        [_TLS_ALERT, 3, _alert_minor(client_hello_prefix), 0, 2, _ALERT_FATAL, _ACCESS_DENIED]
    )


def _alert_minor(prefix: bytes | None) -> int:
    if not prefix or prefix[0] != 22:
        return 3
    # record: type(1) version(2) length(2); handshake: type(1) length(3); legacy_version(2)
    if len(prefix) >= 11 and prefix[5] == 1 and prefix[9] == 3:
        return min(prefix[10], 3)
    if len(prefix) >= 3 and prefix[1] == 3:
        return min(prefix[2], 3)
    return 3
