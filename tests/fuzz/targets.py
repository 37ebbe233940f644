"""The fuzzed parsers: each one's seeds, the tokens of its format and its invariants.

The invariants are the ones that matter for an air gap, checked on every input:
- nothing raises but the parser's own refusal (ConfigError, HandshakeError, ProtocolError);
- a refusal of a config file is one printable line naming where the problem is;
- a name sniffed from a hello or head is in its bytes, and a final answer stays final;
- an upstream handshake is "done" (a tunnel) only after a real success reply;
- a PAC result goes DIRECT only when it says DIRECT.
The unit tests reuse these checks with hypothesis (`tests/unit/.../test_*_properties.py`).
"""

from __future__ import annotations

import json
import re
import ssl
import zlib

from pac.result import ProtocolError, decode_envelope
from proxy.forward_head import HeadError, parse_request_head
from proxy.handshake import HandshakeError, UpstreamHandshake, http_connect, socks4, socks5
from proxy.sniff import MAX_SNIFF_BYTES, Sniffer, SniffResult, sniff
from rules.config import MAX_MESSAGE, ConfigError, parse_config_bytes
from rules.policy import Policy
from tests.fuzz import register
from tests.unit.proxy.tls_hello import frame, handshake_message, real_client_hello

# ----------------------------------------------------------------------------- config

CONFIG_SOURCE = "fuzz.json"
_CONFIG_SEEDS = [
    {
        "configurationFileVersion": 2,
        "containersProxy": {
            "locked": True,
            "mode": "manual",
            "http": "http://proxy.example:3128",
            "https": "socks5://u:p@[2001:db8::1]:1080",
            "exclude": ["localhost", "*.corp.example", "10.0.0.0/8"],
            "transparentPorts": "80,443,8000-8100",
        },
    },
    {"mode": "manual", "pac": "http://pac.example/proxy.pac", "transparentPorts": "*"},
    {"embeddedPac": "function FindProxyForURL(u, h) { return 'DIRECT'; }"},
    {"mode": "system", "exclude": "a.example, b.example 192.0.2.0/24"},
    {"configurationFileVersion": 2, "containersProxy": {"pac": "/etc/airgap-proxy/p.pac"}},
]


def config_seeds() -> list[bytes]:
    seeds = [json.dumps(s, indent=1).encode() for s in _CONFIG_SEEDS]
    seeds.append(b'{"configurationFileVersion": 2, "containersProxy": {"\\ud800": 1}}')
    seeds.append(b"\xef\xbb\xbf" + seeds[1])
    return seeds


_CONFIG_TOKENS = (
    b'"',
    b"\\",
    b"\\ud800",
    b"\\udc00",
    b"\\u0000",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"1e999",
    b"9" * 40,
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc3",
    b"\xed\xa0\x80",
    b'"mode"',
    b'"exclude"',
    b'"containersProxy"',
    b'"configurationFileVersion"',
    b'"value"',
    b"[" * 50,
)
#: A refusal starts with the source, then what it is about: a key path or the file itself.
_REFUSAL = re.compile(r"fuzz\.json: \S")


def check_config(data: bytes) -> str:
    """Bytes to a validated config, or one ConfigError line; nothing else (then the policy
    built from it, as `run` and `explain` build it)."""
    try:
        cfg = parse_config_bytes(data, CONFIG_SOURCE)
        Policy.from_config(cfg, {})
    except ConfigError as exc:
        message = str(exc)
        assert _REFUSAL.match(message), message
        assert "\n" not in message and "\r" not in message, message
        assert len(message) <= MAX_MESSAGE + 60, len(message)
        message.encode("utf-8")  # printable: no unpaired surrogate
        about = message[len(CONFIG_SOURCE) + 2 :].split(":", 1)[0]
        return "refused " + (about if about.startswith("containersProxy.") else "file")[:40]
    return "accepted"


register("config", config_seeds, check_config, _CONFIG_TOKENS)

# ----------------------------------------------------------------------------- sniffing

_VALID = frozenset({"tls", "http", "other", "unknown"})


def _checked(result: SniffResult) -> SniffResult:
    assert isinstance(result, SniffResult)
    assert not result.note.startswith("internal"), result
    assert result.protocol in _VALID, result
    assert result.hostname is None or result.complete, result
    return result


def check_sniff(data: bytes) -> str:
    """The whole-prefix answer, its stability under more bytes, and the incremental
    `Sniffer` fed in pieces agreeing with it."""
    result = _checked(sniff(data))
    if result.hostname is not None:
        assert result.hostname.encode("latin-1") in data, (result, data[:200])
    if result.complete and len(data) < MAX_SNIFF_BYTES:
        later = _checked(sniff(data + b"\x00\r\n\r\n"))
        assert later.hostname == result.hostname, later
    # Pieces at places derived from the data, so a failure replays from the input alone.
    sniffer, step, pos = Sniffer(), 1 + zlib.crc32(data) % 97, 0
    incremental: SniffResult | None = None
    while pos < len(data) and incremental is None:
        incremental = sniffer.feed(data[pos : pos + step])
        pos += step
    incremental = _checked(incremental or sniffer.finish())
    if result.complete:  # the name decides; the protocol of a nameless answer only picks
        # the form of a refusal (a malformed request line may read as HTTP or as other)
        assert incremental.hostname == result.hostname, (incremental, result)
    kind = result.protocol + (" name" if result.hostname else "")
    return kind + ("" if result.complete else " need-more")


def hello_seeds() -> list[bytes]:
    seeds = [
        real_client_hello("api.example.com"),
        real_client_hello("legacy.example.org", ssl.TLSVersion.TLSv1_2),
        real_client_hello(None),
        real_client_hello("xn--bcher-kva.example"),
    ]
    message = handshake_message(seeds[0])
    seeds.append(frame(message, 100))  # a hello across several records
    return seeds


_TLS_TOKENS = (b"\x16\x03\x01", b"\x00\x00", b"\xfe\x0d", b"\x00\x00\x00\x0b\x00\x09", b"\x01")

register("clienthello", hello_seeds, check_sniff, _TLS_TOKENS)


def head_seeds() -> list[bytes]:
    return [
        b"GET / HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: fuzz\r\n\r\n",
        b"GET http://a.example:8080/x HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: [2001:db8::1]:80\r\nContent-Length: 3\r\n\r\nabc",
        b"HEAD / HTTP/1.0\r\nhost: B.Example.\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: c.example\r\nConnection: close\r\n\r\n",
    ]


_HTTP_TOKENS = (
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"Host: ",
    b"Host:",
    b" HTTP/1.1",
    b"HTTP/2.0",
    b":",
    b" ",
    b"\t",
    b"@",
    b"[",
    b"]",
    b"%00",
    b"\x00",
    b"Transfer-Encoding: chunked\r\n",
)

register("http-head", head_seeds, check_sniff, _HTTP_TOKENS)

# ----------------------------------------------------------------------------- handshakes


def _drive(handshake: UpstreamHandshake, data: bytes) -> tuple[str, bytes]:
    """Feed `data` in pieces (placed by the data's checksum): ("done", consumed bytes),
    ("refused"/"error", b"") or ("waiting", b"")."""
    handshake.start()
    step, pos = 1 + zlib.crc32(data) % 13, 0
    try:
        while pos < len(data):
            piece = data[pos : pos + step]
            pos += len(piece)
            result = handshake.receive(piece)
            if result.done:
                assert data[:pos].endswith(result.leftover), result
                return "done", data[: pos - len(result.leftover)]
        return "waiting", b""
    except HandshakeError as exc:
        return ("refused" if type(exc).__name__ == "UpstreamRefused" else "error"), b""


#: h11 reads any one-digit version (HTTP/0.1 too): what counts is the 2xx status.
_STATUS = re.compile(rb"(?:^|\n)HTTP/[0-9]\.[0-9] 2[0-9][0-9]")


def check_connect_reply(data: bytes) -> str:
    outcome, consumed = _drive(http_connect("example.com", 443), data)
    if outcome == "done":  # a tunnel only after a 2xx status line
        assert _STATUS.search(consumed), consumed[:200]
        assert consumed.endswith(b"\n"), consumed[-20:]
    return outcome


register(
    "connect-reply",
    lambda: [
        b"HTTP/1.1 200 Connection established\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nProxy-Agent: x\r\n\r\n\x16\x03\x03tunnel",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.0 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!",
    ],
    check_connect_reply,
    (b"\r\n", b"HTTP/1.1 ", b"200", b"101", b"Content-Length: ", b"Transfer-Encoding: chunked"),
)


def check_socks5_reply(data: bytes) -> str:
    outcome, consumed = _drive(socks5("example.com", 443, "user", "secret"), data)
    if outcome == "done":  # method chosen, auth (if chosen) passed, then REP = succeeded
        assert consumed[0] == 5 and consumed[1] in (0, 2), consumed
        reply = consumed[2:] if consumed[1] == 0 else consumed[4:]
        if consumed[1] == 2:
            assert consumed[2:4] == b"\x01\x00", consumed
        assert reply[:3] == b"\x05\x00\x00", consumed
    return outcome


register(
    "socks5-reply",
    lambda: [
        b"\x05\x00\x05\x00\x00\x01\xc0\x00\x02\x01\x04\x38",
        b"\x05\x02\x01\x00\x05\x00\x00\x03\x0bexample.com\x01\xbb",
        b"\x05\x00\x05\x00\x00\x04" + bytes(16) + b"\x00\x50tunnel bytes",
        b"\x05\x00\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00",
        b"\x05\xff",
    ],
    check_socks5_reply,
    (b"\x05", b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\xff"),
)


def check_socks4_reply(data: bytes) -> str:
    outcome, consumed = _drive(socks4("example.com", 443), data)
    if outcome == "done":
        assert consumed[:2] == b"\x00\x5a" and len(consumed) == 8, consumed
    return outcome


register(
    "socks4-reply",
    lambda: [b"\x00\x5a\x01\xbb\xc0\x00\x02\x01", b"\x00\x5b" + bytes(6), b"\x00\x5a" + bytes(6)],
    check_socks4_reply,
    (b"\x00", b"\x5a", b"\x5b", b"\x04"),
)

# ----------------------------------------------------------------------------- PAC results

_DIRECT = re.compile(r"(?:^|[;\s])direct(?:$|[;\s])", re.IGNORECASE)


def check_pac_result(data: bytes) -> str:
    """The engine's reply envelope, then our verdict on the result string it carries."""
    try:
        envelope = decode_envelope(data.decode("utf-8", "surrogateescape"))
    except ProtocolError:
        return "protocol error"
    verdict = envelope.outcome.verdict()
    result = envelope.outcome.result
    if any(route.kind == "DIRECT" for route in verdict.routes):
        assert result is not None and _DIRECT.search(result), (result, verdict)
    if result is None or not envelope.outcome.ok:
        assert verdict.rejected and not verdict.routes, verdict
    return "rejected" if verdict.rejected else "routes"


def pac_result_seeds() -> list[bytes]:
    replies: list[dict[str, object]] = [
        {"r": "PROXY a.example:3128; SOCKS5 [2001:db8::1]:1080; DIRECT", "c": True},
        {"r": "HTTPS p.example; PROXY blocked.invalid:1; DIRECT", "a": ["alert"]},
        {"r": "DIRECT", "d": [["h.example", ["192.0.2.1", "2001:db8::2"]]], "miss": ["x"]},
        {"k": "timeout", "m": "FindProxyForURL ran past its time bound", "l": 3},
        {"r": "", "i": True, "x": False},
        {"r": "socks 10.0.0.1:1080 ;  proxy  h:80"},
    ]
    return [json.dumps(r).encode() for r in replies]


register(
    "pac-result",
    pac_result_seeds,
    check_pac_result,
    (b'"', b"DIRECT", b"PROXY ", b";", b" ", b"\\u0000", b"null", b"[", b"]", b'"k"', b"\\ud800"),
)

# ----------------------------------------------------------------------------- explicit proxy


def forward_head_seeds() -> list[bytes]:
    return [
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
        b"GET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\n"
        b"Proxy-Connection: keep-alive\r\n\r\n",
        b"POST http://[2001:db8::1]:8080/p HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n"
        b"Content-Length: 3\r\n\r\n",
        b"PUT http://b.example/ HTTP/1.1\r\nHost: b.example\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\n\r\n",
        b"GET http://user:pw@c.example/ HTTP/1.0\r\nConnection: close\r\n\r\n",
    ]


def check_forward_head(data: bytes) -> str:
    """The explicit listener's head parser: a request whose fields hold what the listener
    relies on, or a refusal with a 4xx, 501 or 505 status; any other exception is a bug."""
    try:
        req = parse_request_head(data)
    except HeadError as exc:
        if not (400 <= exc.status <= 499 or exc.status in (501, 505)):
            raise AssertionError(f"refusal with status {exc.status}") from exc
        return f"refused {exc.status}"
    if not req.host or not 0 < req.port < 65536:
        raise AssertionError(f"accepted without a usable target: {req!r}")
    if req.chunked and req.content_length is not None:
        raise AssertionError("accepted with both chunked and Content-Length framing")
    if req.method != "CONNECT" and not req.path.startswith("/"):
        raise AssertionError(f"accepted with a path that is not origin-form: {req.path!r}")
    return f"accepted {req.method if req.method in ('CONNECT', 'GET', 'POST') else 'other'}"


register(
    "forward-head",
    forward_head_seeds,
    check_forward_head,
    (*_HTTP_TOKENS, b"CONNECT ", b"Content-Length: ", b"http://", b"https://", b":0"),
)
