"""One version of the policy file, and the record of the last reload.

A reload reads the file, validates it completely (`rules.config.load_config`, with every
check the start-up read has: modes, keys, types), and only then replaces the policy in
force. The text that was validated is what every worker is sent, with its sha256, so all of
them decide with the same bytes, and a worker started later gets the version in force, not
whatever the file holds by then (it may be half-written or invalid).

`ReloadState` is the one small object the process that owns the policy keeps about reloads:
what the last one did, when, the hashes, the refusal. Status pages and counters read it or
register a hook (`on_result`); nothing here knows about them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from rules.config import ConfigError, ContainersProxyConfig, load_config, parse_config_text

log = logging.getLogger("airgap.proxy")

#: The largest file read for its hash: the loader refuses larger ones anyway.
_MAX_BYTES = 16 * 1024 * 1024 + 1

ReloadResult = Literal["ok", "unchanged", "invalid"]


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """A validated policy file: its text, the sha256 of its bytes, the parsed config."""

    text: str
    sha256: str
    source: str
    cfg: ContainersProxyConfig


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open config file: {exc.strerror or exc}") from None


def read_version(path: str) -> ConfigVersion:
    """Read and validate the file at `path`; ConfigError naming the problem otherwise.

    The loader makes every check on the descriptor it read; the bytes hashed and handed on
    are read around it, and must be the same before and after: a file that changed while it
    was read (an editor writing it in place) is refused this time, and its next change is
    read again, so a half-written file is never taken.
    """
    before = _read_bytes(path)
    cfg = load_config(path)
    after = _read_bytes(path)
    if before != after:
        raise ConfigError(f"{path}: changed while it was being read (still being written?)")
    try:
        text = after.decode("utf-8")
    except UnicodeDecodeError as exc:  # the loader refused this already; kept for the type
        raise ConfigError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from None
    return ConfigVersion(text, sha256_bytes(after), path, cfg)


def text_version(text: str, source: str) -> ConfigVersion:
    """A version from text already read (the bundled default, or one a worker was sent)."""
    cfg = parse_config_text(text, source)
    return ConfigVersion(text, sha256_bytes(text.encode("utf-8")), source, cfg)


def pac_identity(cfg: ContainersProxyConfig) -> tuple[str, str] | None:
    """What names the PAC script of a config: a reload that keeps it keeps the script in
    force; one that changes it fails PAC-decided connections closed until the new one loads.
    None when no PAC decides."""
    if not cfg.uses_pac:
        return None
    if cfg.embedded_pac is not None:
        return (
            "embeddedPac",
            hashlib.sha256(cfg.embedded_pac.encode("utf-8", "surrogatepass")).hexdigest(),
        )
    assert cfg.pac is not None
    return ("pac", cfg.pac)


@dataclass(slots=True)
class ReloadState:
    """The last reload of one policy file, for status pages and counters.

    `sha256` is the version in force. `on_result` hooks are called with the result of each
    reload ("ok", "unchanged", "invalid"), e.g. to count them; a hook that raises is logged
    and does not stop the reload.
    """

    path: str | None
    sha256: str
    result: ReloadResult | None = None
    at: float | None = None
    old_sha256: str | None = None
    new_sha256: str | None = None
    error: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "unchanged": 0, "invalid": 0})
    on_result: list[Callable[[ReloadResult], None]] = field(default_factory=list)

    def record(self, result: ReloadResult, new_sha256: str | None, error: str | None) -> None:
        self.result = result
        self.at = time.time()
        self.old_sha256 = self.sha256
        self.new_sha256 = new_sha256
        self.error = error
        self.counts[result] += 1
        if result == "ok" and new_sha256 is not None:
            self.sha256 = new_sha256
        for hook in self.on_result:
            try:
                hook(result)
            except Exception:
                log.exception("reload hook failed")

    def to_json(self) -> dict[str, object]:
        """The last reload as a status page shows it (no policy text, no credential)."""
        return {
            "config": self.path,
            "sha256": self.sha256,
            "last_result": self.result,
            "last_time": self.at,
            "old_sha256": self.old_sha256,
            "new_sha256": self.new_sha256,
            "error": self.error,
            "counts": dict(self.counts),
        }
