"""URLs without their secrets, for logs and the admin endpoint.

A PAC URL may carry a user and password (`https://user:pw@host/proxy.pac`) or a token in
its query; neither may appear where an operator's tools collect text.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REDACTED = "REDACTED"


def redact_url(url: str) -> str:
    """A URL without its user, password, query and fragment (a path stays: it names the
    file). Anything that does not parse as a URL is replaced whole."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    if not parts.scheme or parts.scheme.lower() == "file" or not parts.netloc:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    query = REDACTED if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_secrets(url: str) -> list[str]:
    """The parts of a URL `redact_url` takes out."""
    try:
        parts = urlsplit(url)
        found = [parts.username, parts.password, parts.query, parts.fragment]
    except ValueError:
        return [url]
    return [s for s in found if s]
