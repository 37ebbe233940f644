"""One audit line per connection: who, where, what was decided and why, what it cost.

Written once, when the connection ends (never per chunk). Credentials never appear: routes
are logged in PAC spelling, which carries none.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

log = logging.getLogger("airgap.conn")


@dataclass(slots=True)
class ConnectionRecord:
    """What the audit line says about one connection."""

    client: str
    dst: str = ""
    hostname: str | None = None
    decision: str = ""
    reason: str = ""
    route: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    error: str | None = None
    started: float = field(default_factory=time.time)
    monotonic_start: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        del data["monotonic_start"], data["started"]
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started))
            + f".{int(self.started * 1000) % 1000:03d}Z",
            **data,
            "duration_ms": round((time.monotonic() - self.monotonic_start) * 1000, 1),
        }


def emit(record: ConnectionRecord, json_format: bool) -> None:
    """Log the record as one line (JSON, or `key=value` pairs for people)."""
    if not log.isEnabledFor(logging.INFO):
        return
    data = record.as_dict()
    if json_format:
        log.info(json.dumps(data, separators=(",", ":")))
        return
    parts = []
    for key, value in data.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c in text for c in ' "='):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    log.info(" ".join(parts))
