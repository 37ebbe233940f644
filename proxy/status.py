"""The admin endpoint's `/status` document: small named sections, each built by a provider
the run registers, and a redaction pass over the whole of it.

Nothing in the document may reveal a credential or the PAC's text. Upstreams are shown
without their user and password; a PAC URL loses its user, password, query and fragment
(tokens live there); and every string of the finished document is scrubbed of each
secret the run knows (the upstreams' users and passwords, the PAC URL's secret parts), so
an error message that quotes one cannot leak it either. Scripts are never put in: only
their sha256.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pac import installed_version
from pac.routes import Route
from proxy.redact import REDACTED, redact_url, url_secrets
from rules.policy import Policy
from rules.settings import ContainersProxyConfig

__all__ = ["REDACTED", "redact_url"]

Provider = Callable[[], object]


def describe_route(route: Route | None) -> dict[str, Any] | None:
    if route is None:
        return None
    return {
        "route": route.pac_spelling(),
        "credentials": REDACTED if route.username or route.password else None,
    }


def route_secrets(route: Route | None) -> list[str]:
    if route is None:
        return []
    return [s for s in (route.username, route.password) if s]


@dataclass(slots=True)
class InForce:
    """The policy in force and where it came from (a reload replaces this value)."""

    config_path: str | None
    config_sha256: str
    cfg: ContainersProxyConfig
    policy: Policy

    @property
    def pac_source(self) -> str | None:
        if self.cfg.embedded_pac is not None:
            return "embeddedPac"
        return self.cfg.pac

    def secrets(self) -> list[str]:
        http, https = self.policy.upstreams
        found = route_secrets(http) + route_secrets(https)
        found += route_secrets(self.cfg.http) + route_secrets(self.cfg.https)
        if self.cfg.pac:
            found += url_secrets(self.cfg.pac)
        return found

    def describe(self) -> dict[str, Any]:
        http, https = self.policy.upstreams
        ports = self.cfg.transparent_ports
        spec = (
            "*"
            if ports.is_all
            else ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ports.ranges())
        )
        source = self.pac_source
        return {
            "mode": self.cfg.mode,
            "transparentPorts": spec,
            "exclude_count": len(self.cfg.exclude_entries),
            "upstreams": {"http": describe_route(http), "https": describe_route(https)},
            "pac_source": None if source is None else redact_url(source),
        }


def file_sha256(path: str | None, fallback_text: str) -> str:
    """The sha256 of the config file as it is now (of the bundled text without one)."""
    if path is None:
        return hashlib.sha256(fallback_text.encode()).hexdigest()
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def scrub(value: object, secrets: Iterable[str]) -> object:
    """`value` with every occurrence of a secret in any string replaced by REDACTED."""
    words = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not words:
        return value

    def walk(v: object) -> object:
        if isinstance(v, str):
            for word in words:
                if word in v:
                    v = v.replace(word, REDACTED)
            return v
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(value)


@dataclass(slots=True)
class StatusBoard:
    """Named sections of `/status`, in order; `add(name, provider)` is all a new one takes."""

    secrets: Callable[[], Iterable[str]] = list
    sections: dict[str, Provider] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def add(self, name: str, provider: Provider) -> None:
        self.sections[name] = provider

    def render(self) -> object:
        doc: dict[str, object] = {
            "version": installed_version(),
            "started": _iso(self.started),
            "uptime_seconds": round(time.time() - self.started, 1),
        }
        for name, provider in self.sections.items():
            doc[name] = provider()
        return scrub(doc, self.secrets())


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))
