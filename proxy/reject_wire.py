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
