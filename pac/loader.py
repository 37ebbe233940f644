"""Reading a PAC script: from a path, `file://`, `http(s)://` or stdin, bounded and decoded.

The fetch, the size check and the decoding are separate functions because the proxy's PAC
refresh reuses `fetch_pac`, `check_size` and `decode_pac` (with its own retry/backoff),
while `pac-eval` uses `read_pac`. Every byte is hostile: sizes are checked while reading
(never trusting Content-Length alone), time is bounded, TLS is verified.
"""

from __future__ import annotations

import codecs
import errno
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:  # asyncio, ssl and aiohttp are imported only for an http(s) source
    import ssl

    import aiohttp

#: The largest script accepted, downloaded or read (`--pac-max-bytes`): the loader refuses
#: more before decoding it, and the sandbox before an engine sees it.
DEFAULT_MAX_BYTES = 1 << 20
#: Whole-download bound for http(s) sources, seconds.
DEFAULT_FETCH_TIMEOUT = 10.0
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


class PacSourceError(Exception):
    """The PAC cannot be read: missing, unreachable, refused by the server, too big."""


def check_size(size: int, max_bytes: int, source: str) -> None:
    """Refuse a script over `max_bytes` (`--pac-max-bytes`, one setting with the proxy)."""
    if size > max_bytes:
        raise PacSourceError(f"{source}: more than {max_bytes} bytes (the --pac-max-bytes limit)")


def decode_pac(data: bytes, charset: str | None = None) -> str:
    """Bytes to text: a BOM wins, then the declared charset, then UTF-8, then Latin-1.

    Latin-1 never fails, so any byte string decodes; the engine then judges the script.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError:
                break
    if charset:
        try:
            return data.decode(charset)
        except (LookupError, ValueError):  # UnicodeError too: 'undefined', 'punycode', NUL
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_bounded(stream: BinaryIO, max_bytes: int, source: str) -> bytes:
    data = stream.read(max_bytes + 1)
    check_size(len(data), max_bytes, source)
    return data


def read_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """A local file, size-bounded."""
    try:
        with open(path, "rb") as f:
            return _read_bounded(f, max_bytes, str(path))
    except OSError as exc:
        raise PacSourceError(f"{path}: {exc.strerror or exc}") from None


def _charset_of(content_type: str | None) -> str | None:
    if not content_type:
        return None
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused (nothing listens on that port)",
    errno.ECONNRESET: "connection reset by the server",
    errno.ETIMEDOUT: "connection timed out",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EADDRNOTAVAIL: "address not available",
}


def _os_error_words(exc: BaseException | None) -> str:
    if isinstance(exc, socket.gaierror):
        return "the name does not resolve" + (f" ({exc.strerror})" if exc.strerror else "")
    if isinstance(exc, OSError):
        if exc.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[exc.errno]
        if exc.strerror:
            return exc.strerror[:1].lower() + exc.strerror[1:]
    return "connection failed"


def describe_fetch_error(exc: BaseException) -> str:
    """What went wrong with a download, in our words: aiohttp's own messages quote its
    internals (`Cannot connect to host h:1 ssl:default [Connect call failed ...]`), which
    tell a PAC author less than "connection to h:1 refused"."""
    import ssl

    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        why = getattr(cert, "verify_message", None) or getattr(cert, "reason", None) or cert
        return f"the TLS certificate of {exc.host}:{exc.port} is not trusted ({why})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        why = getattr(exc.os_error, "reason", None) or exc.os_error
        return f"the TLS handshake with {exc.host}:{exc.port} failed ({why})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, socket.gaierror):
            return f"cannot resolve {exc.host}: {_os_error_words(exc.os_error)}"
        return f"cannot connect to {exc.host}:{exc.port}: {_os_error_words(exc.os_error)}"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "too many redirects (more than 5)"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before a complete answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the download was cut short or garbled (bad chunked or compressed body)"
    if isinstance(exc, aiohttp.InvalidURL):
        return "not a valid URL"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"the server's answer is not valid HTTP ({exc.message or exc.status})"
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, aiohttp.ClientError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, OSError):
        return f"the connection failed: {_os_error_words(exc)}"
    return f"the download failed ({type(exc).__name__})"


@dataclass(frozen=True, slots=True)
class Fetched:
    """One PAC download: `status` 200 (with the body) or 304 (unchanged)."""

    status: int
    body: bytes = b""
    charset: str | None = None
    etag: str | None = None
    last_modified: str | None = None


async def fetch_pac_with(
    session: aiohttp.ClientSession,
    url: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    etag: str | None = None,
    last_modified: str | None = None,
) -> Fetched:
    """GET an http(s) PAC through an aiohttp `session` (whose connector holds the TLS
    context and socket options). With `etag`/`last_modified` the request is conditional and
    may answer 304. Bounded by `timeout` for the whole exchange and by `max_bytes`, counted
    as the body arrives; any other status than 200/304, and a redirect that leaves https, is
    a PacSourceError."""
    import ssl

    import aiohttp

    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise PacSourceError(f"{url}: not an http(s) URL")
    headers = {"Accept": "application/x-ns-proxy-autoconfig, */*;q=0.5"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), max_redirects=5
        ) as resp:
            if scheme == "https" and any(
                hop.url.scheme != "https" for hop in (*resp.history, resp)
            ):
                raise PacSourceError(f"{url}: redirected away from https to {resp.url}")
            if resp.status == 304 and (etag or last_modified):
                return Fetched(304)
            if resp.status != 200:
                raise PacSourceError(f"{url}: HTTP {resp.status} {resp.reason or ''}".rstrip())
            if resp.content_length is not None:
                check_size(resp.content_length, max_bytes, url)
            body = bytearray()
            async for chunk in resp.content.iter_chunked(1 << 16):
                body += chunk
                check_size(len(body), max_bytes, url)
            return Fetched(
                200,
                bytes(body),
                _charset_of(resp.headers.get("Content-Type")),
                resp.headers.get("ETag"),
                resp.headers.get("Last-Modified"),
            )
    except PacSourceError:
        raise
    except TimeoutError:
        raise PacSourceError(f"{url}: no complete answer within {timeout:g} s") from None
    except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
        raise PacSourceError(f"{url}: {describe_fetch_error(exc)}") from None


async def fetch_pac(
    url: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[bytes, str | None]:
    """GET an http(s) PAC once: (body, charset). Certificates are verified (`ssl_context`
    lets a caller add a private CA, never turn verification off); proxy variables are
    ignored (trust_env=False)."""
    import ssl

    import aiohttp

    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise PacSourceError(f"{url}: not an http(s) URL")
    connector = aiohttp.TCPConnector(ssl=ssl_context or ssl.create_default_context())
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        fetched = await fetch_pac_with(session, url, max_bytes, timeout)
    return fetched.body, fetched.charset


def read_pac(
    source: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    stdin: BinaryIO | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """The PAC text from a path, `file://` URL, `http(s)://` URL or `-` (stdin)."""
    if source == "-":
        return decode_pac(_read_bounded(stdin or sys.stdin.buffer, max_bytes, "stdin"))
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        import asyncio

        body, charset = asyncio.run(fetch_pac(source, max_bytes, timeout, ssl_context))
        return decode_pac(body, charset)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise PacSourceError(f"{source}: only local file:// URLs are supported")
        return decode_pac(read_file(unquote(parts.path), max_bytes))
    if scheme and len(scheme) > 1:
        raise PacSourceError(f"{source}: unsupported URL scheme {scheme!r}")
    return decode_pac(read_file(source, max_bytes))
