"""Where the PAC script comes from, and whether it may be used: download, refresh, fail closed.

One `PacSource` owns the script for the whole proxy (with several workers it runs in the
supervisor, which hands every worker the same script). Its state is a `PacSnapshot`: the
script in force, or none, with the reason. Until a script is loaded, and whenever a download
or a re-read fails, the snapshot has no script and every PAC-decided connection is REJECTed
("PAC unavailable"): the newest intent is unknown, so nothing passes. `--pac-stale-grace`
lets an operator keep the last good script for a bounded time after failures begin.

A new script is validated (loaded into the engine) before it is swapped in, so no connection
ever sees a half-loaded or broken script. Refreshes use ETag / Last-Modified, so an unchanged
file costs one small request and no re-parse. The download's socket carries the proxy's
`--mark`, so it never loops into the proxy itself, and aiohttp ignores proxy variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import ssl
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pac.lint import lint, load_hints
from pac.loader import Fetched, PacSourceError, check_size, decode_pac, fetch_pac_with
from proxy.config import DEFAULTS
from proxy.metrics import METRICS, ProcessMetrics
from proxy.redact import REDACTED, redact_url, url_secrets
from rules.policy_path import unsafe_path_reason

if TYPE_CHECKING:  # aiohttp is imported when a PAC URL is first fetched
    import aiohttp

log = logging.getLogger("airgap.pac")

Validator = Callable[[str], Awaitable[None]]  # raises with a clear message when unusable
#: Lint findings logged for a new script; the rest are counted (`pac-eval --lint` lists all).
MAX_LINT_LINES = 20


@dataclass(frozen=True, slots=True)
class PacSnapshot:
    """The PAC state every decision reads: a script, or the reason there is none."""

    script: str | None
    sha256: str | None = None
    error: str | None = None
    stale: bool = False  # True while an old script is used under --pac-stale-grace

    def to_json(self) -> dict[str, object]:
        return {"script": self.script, "sha256": self.sha256, "error": self.error,
                "stale": self.stale}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, object]) -> PacSnapshot:
        script = data.get("script")
        return cls(
            script=script if isinstance(script, str) else None,
            sha256=str(data["sha256"]) if data.get("sha256") else None,
            error=str(data["error"]) if data.get("error") else None,
            stale=bool(data.get("stale")),
        )


UNLOADED = PacSnapshot(None, error="PAC not loaded yet")


@dataclass(slots=True)
class PacSettings:
    """The `--pac-*` tunables."""

    refresh: float = DEFAULTS.pac.refresh
    timeout: float = DEFAULTS.pac.fetch_timeout
    retry_max: float = DEFAULTS.pac.retry_max
    stale_grace: float = DEFAULTS.pac.stale_grace
    max_bytes: int = DEFAULTS.pac.max_bytes
    ssl_context: ssl.SSLContext | None = None
    mark: int | None = None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def check_not_writable_by_others(path: Path, info: os.stat_result) -> None:
    """A policy file others can change is no policy: refuse it (as for the config file).

    `info` is the fstat of the file as opened, so the file checked is the file read; the
    directories on its path count too (a ConfigMap's read-only symlink chain passes).
    """
    if not stat.S_ISREG(info.st_mode):
        raise PacSourceError(f"{path}: not a regular file")
    unsafe = unsafe_path_reason(str(path), info)
    if unsafe is not None:
        raise PacSourceError(f"{path}: {unsafe} (chmod go-w)")


def local_path(source: str) -> Path | None:
    """The path of a `file://` URL or a plain path; None for http(s)."""
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise PacSourceError(f"{source}: only local file:// URLs are supported")
        return Path(unquote(parts.path))
    return Path(source)


class PacSource:
    """Keeps the PAC snapshot current and tells `on_change` about every new snapshot."""

    def __init__(
        self,
        source: str | None,
        inline: str | None,
        settings: PacSettings,
        validate: Validator,
        on_change: Callable[[PacSnapshot], Awaitable[None] | None],
        metrics: ProcessMetrics = METRICS,
    ) -> None:
        self.metrics = metrics
        #: Wall-clock times of the last download or read that gave a usable script, and of
        #: the last failure with its message (for the admin endpoint's /status).
        self.last_success: float | None = None
        self.last_error: tuple[float, str] | None = None
        self.source = source
        self.inline = inline
        self.settings = settings
        self.validate = validate
        self.on_change = on_change
        self.snapshot = UNLOADED
        self._good: PacSnapshot | None = None
        self._good_etag: str | None = None
        self._good_last_modified: str | None = None
        self._failing_since: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._poked = asyncio.Event()
        #: How logs and errors name the source: its URL without user, password or query.
        self.label = "embeddedPac" if inline is not None else redact_url(str(source))

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Load, then refresh forever (cancel to stop). Embedded scripts load once."""
        try:
            if self.inline is not None:
                await self._accept_text(self.inline, first=True)
                return
            backoff = 1.0
            while True:
                ok = await self.refresh_once()
                if ok:
                    backoff = 1.0
                    delay = self.settings.refresh
                else:
                    delay = min(backoff, self.settings.retry_max)
                    backoff = min(backoff * 2, self.settings.retry_max)
                    delay = self._until_grace_ends(delay)
                await self._pause(delay)
        finally:
            await self.close()

    def poke(self) -> None:
        """Refresh now instead of at the end of the pause (a file PAC changed, SIGHUP)."""
        self._poked.set()

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poked.wait(), delay)
        self._poked.clear()

    async def close(self) -> None:
        session = self._session
        self._session = None
        if session is not None:
            await session.close()

    def _until_grace_ends(self, delay: float) -> float:
        """Wake up when the stale grace runs out, so the old script stops at once."""
        if self.snapshot.stale and self._failing_since is not None:
            left = self._failing_since + self.settings.stale_grace - time.monotonic()
            return max(0.05, min(delay, left))
        return delay

    async def refresh_once(self) -> bool:
        """One download or re-read; returns True when a usable script is in force."""
        try:
            path = local_path(str(self.source))
            if path is not None:
                text_read = await asyncio.to_thread(self._read_file, path)
                return await self._accept_text(text_read)
            fetched = await self._fetch(str(self.source))
            text = None if fetched.status == 304 else decode_pac(fetched.body, fetched.charset)
        except PacSourceError as exc:
            await self._fail(str(exc), "error")
            return False
        except Exception as exc:  # anything unexpected is a failure too: fail closed
            await self._fail(f"{self.label}: {type(exc).__name__}: {exc}", "error")
            return False
        if fetched.status == 304:
            if self._good is None:
                await self._fail(f"{self.label}: 304 Not Modified but no script is loaded", "error")
                return False
            await self._unchanged()
            return True
        assert text is not None
        ok = await self._accept_text(text)
        if ok:
            self._good_etag, self._good_last_modified = fetched.etag, fetched.last_modified
        return ok

    # ----------------------------------------------------------------- state changes

    async def _accept_text(self, text: str, first: bool = False) -> bool:
        digest = sha256_text(text)
        if self._good is not None and digest == self._good.sha256:
            await self._unchanged()
            return True
        try:
            await self.validate(text)
        except Exception as exc:
            hints = load_hints(text, getattr(exc, "error", None))
            why = f"{exc} (hint: {'; '.join(hints)})" if hints else str(exc)
            await self._fail(f"{self.label}: script refused: {why}", "invalid")
            return False
        recovering = self._failing_since is not None
        event = "loaded" if self._good is None else "refreshed"
        if recovering and self._good is not None:
            event = "recovered, refreshed"
        elif recovering:
            event = "recovered, loaded"
        self._failing_since = None
        self.metrics.inc("airgap_pac_fetches", "ok")
        self.last_success = time.time()
        self._good = PacSnapshot(text, digest)
        await self.publish(self._good)
        log.info("PAC %s: source=%s sha256=%s bytes=%d", event, self.label, digest[:16], len(text))
        await self._log_lint(text)
        return True

    async def _log_lint(self, text: str) -> None:
        """Warn about the new script's rules that do not do what they seem to (the
        `pac-eval --lint` findings): an operator reads this log, not the script. The lint
        reads a hostile script's text, so it runs off the event loop."""
        try:
            findings = await asyncio.to_thread(lint, text)
        except Exception as exc:  # a lint bug must not refuse a script that loads
            log.warning("PAC lint failed: source=%s: %s: %s", self.label, type(exc).__name__, exc)
            return
        for finding in findings[:MAX_LINT_LINES]:
            log.warning("PAC lint: source=%s %s", self.label, finding)
        if len(findings) > MAX_LINT_LINES:
            log.warning("PAC lint: source=%s and %d more (pac-eval --lint lists them all)",
                        self.label, len(findings) - MAX_LINT_LINES)  # fmt: skip

    async def _unchanged(self) -> None:
        assert self._good is not None
        self.metrics.inc("airgap_pac_fetches", "unchanged")
        self.last_success = time.time()
        if self._failing_since is not None or self.snapshot is not self._good:
            self._failing_since = None
            log.info("PAC recovered (unchanged): source=%s sha256=%s", self.label,
                     self._good.sha256[:16] if self._good.sha256 else "-")  # fmt: skip
            await self.publish(self._good)
        else:
            log.info("PAC unchanged: source=%s", self.label)

    def _hide(self, text: str) -> str:
        """`text` with the source's secrets taken out: a download error quotes the URL."""
        if self.source is None or self.label == self.source:
            return text
        text = text.replace(self.source, self.label)
        for secret in url_secrets(self.source):
            text = text.replace(secret, REDACTED)
        return text

    async def _fail(self, error: str, result: str) -> None:
        error = self._hide(error)
        self.metrics.inc("airgap_pac_fetches", result)
        self.last_error = (time.time(), error)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        grace = self.settings.stale_grace
        if self._good is not None and grace > 0 and now - self._failing_since < grace:
            left = grace - (now - self._failing_since)
            log.error("PAC failed: %s; keeping the last good script for %.0f s more "
                      "(--pac-stale-grace)", error, left)  # fmt: skip
            snap = PacSnapshot(self._good.script, self._good.sha256, error, stale=True)
        else:
            log.error("PAC failed: %s; every PAC-decided connection is rejected", error)
            snap = PacSnapshot(None, None, error)
        await self.publish(snap)

    async def publish(self, snap: PacSnapshot) -> None:
        self.snapshot = snap
        result = self.on_change(snap)
        if result is not None:
            await result

    # ----------------------------------------------------------------- sources

    def _read_file(self, path: Path) -> str:
        try:
            # O_NONBLOCK: a FIFO put in the PAC's place must not hang the open; the
            # check that follows refuses anything but a regular file.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                check_not_writable_by_others(path, os.fstat(fd))
                data = f.read(self.settings.max_bytes + 1)
        except OSError as exc:
            raise PacSourceError(f"{path}: {exc.strerror or exc}") from None
        check_size(len(data), self.settings.max_bytes, str(path))
        return decode_pac(data)

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            mark = self.settings.mark

            def marked_socket(addr_info: tuple[Any, ...]) -> socket.socket:
                family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
                sock = socket.socket(family, type_, proto)
                if mark is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
                return sock

            connector = aiohttp.TCPConnector(
                ssl=self.settings.ssl_context or ssl.create_default_context(),
                socket_factory=marked_socket,
                limit=2,
            )
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def _fetch(self, url: str) -> Fetched:
        etag = self._good_etag if self._good is not None else None
        modified = self._good_last_modified if self._good is not None else None
        return await fetch_pac_with(
            self._client(), url, self.settings.max_bytes, self.settings.timeout, etag, modified
        )


def warn_about_plain_http(source: str | None) -> None:
    if source and urlsplit(source).scheme.lower() == "http":
        log.warning(
            "PAC %s is fetched over plain http: anyone on the path can change the policy",
            redact_url(source),
        )
