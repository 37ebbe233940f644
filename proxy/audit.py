"""One audit line per connection: who, where, what was decided and why, what it cost.

Written once, when the connection ends (never per chunk). Credentials never appear: routes
are logged in PAC spelling, which carries none. Every line has a decision: a connection that
ended before the policy decided (not redirected, no original destination, the client left
during the peek) was never let through, so its line says REJECT.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

from pac.addr import format_hostport
from pac.routes import Route

log = logging.getLogger("airgap.conn")

#: What the line says for a connection the policy never decided: nothing of it was forwarded.
UNDECIDED = "REJECT"


_addr = format_hostport


@dataclass(slots=True)
class ConnectionRecord:
    """What the audit line says about one connection.

    Addresses and the route are kept as the values the connection already holds and are
    only formatted when the line is written: an idle relay should cost as little as it can.
    """

    client_ip: str
    client_port: int
    dst_ip: str = ""
    dst_port: int = 0
    hostname: str | None = None
    decision: str = ""
    reason: str = ""
    route: Route | str | None = None  # a Route (printed in PAC spelling) or a note
    bytes_up: int = 0
    bytes_down: int = 0
    error: str | None = None
    #: What kind of failure `error` is (`proxy.metrics.ERROR_KINDS`), for the metrics.
    kind: str | None = None
    #: Which front door: "transparent" (redirected connections) or "explicit" (the proxy
    #: listener). An explicit line is one request and also says `method`, the requested
    #: `host` and `port`, and the `status` answered (200 for an established CONNECT).
    path: str = "transparent"
    method: str | None = None
    host: str = ""
    port: int = 0
    status: int | None = None
    #: Set only where a `--shadow-config` policy decided otherwise (`proxy.shadow`).
    shadow_decision: str | None = None
    shadow_reason: str | None = None
    started: float = field(default_factory=time.time)
    monotonic_start: float = field(default_factory=time.monotonic)

    @property
    def client(self) -> str:
        return _addr(self.client_ip, self.client_port)

    @property
    def dst(self) -> str:
        return _addr(self.dst_ip, self.dst_port) if self.dst_ip else ""

    def as_dict(self) -> dict[str, object]:
        data = self._fields()
        if self.shadow_decision is not None:
            data["shadow_decision"] = self.shadow_decision
            data["shadow_reason"] = self.shadow_reason
        return data

    def _fields(self) -> dict[str, object]:
        data: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started))
            + f".{int(self.started * 1000) % 1000:03d}Z",
            "path": self.path,
            "client": self.client,
            "dst": self.dst,
            "hostname": self.hostname,
            "decision": self.decision or UNDECIDED,
            "reason": self.reason,
            "route": None if self.route is None else str(self.route),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "error": self.error,
            "duration_ms": round((time.monotonic() - self.monotonic_start) * 1000, 1),
        }
        if self.method is not None:
            data["method"] = self.method
            data["host"] = self.host
            data["port"] = self.port
            data["status"] = self.status
        return data


class AuditFile:
    """`--audit-log FILE`: the audit lines, as JSON lines, appended to a file besides stderr.

    Each line is one `write` to a descriptor opened with O_APPEND, so the workers of one
    proxy can share the file without interleaving inside a line. `reopen` (SIGUSR1) opens
    the path again: logrotate moves the file away, and the lines go to the new one.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = self._open()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY
        return os.open(self.path, flags, 0o640)

    def reopen(self) -> None:
        try:
            fd = self._open()
        except OSError as exc:  # keep writing to the old one rather than losing lines
            log.error("cannot reopen the audit log %s: %s", self.path, exc.strerror or exc)
            return
        old, self.fd = self.fd, fd
        os.close(old)

    def write(self, line: str) -> None:
        try:
            os.write(self.fd, line.encode("utf-8", "backslashreplace") + b"\n")
        except OSError as exc:
            log.error("cannot write the audit log %s: %s", self.path, exc.strerror or exc)

    def close(self) -> None:
        os.close(self.fd)


#: The `--audit-log` file of this process, when one was given.
audit_file: AuditFile | None = None


def open_audit_file(path: str | None) -> None:
    """Open (or, with None, close) this process's `--audit-log` file; OSError if it cannot."""
    global audit_file
    if audit_file is not None:
        audit_file.close()
        audit_file = None
    if path is not None:
        audit_file = AuditFile(path)


def reopen_audit_file() -> None:
    if audit_file is not None:
        audit_file.reopen()
        log.info("audit log reopened: %s", audit_file.path)


def emit(record: ConnectionRecord, json_format: bool) -> None:
    """Log the record as one line (JSON, or `key=value` pairs for people), and append it
    to the `--audit-log` file as JSON."""
    to_file = audit_file
    logged = log.isEnabledFor(logging.INFO)
    if not logged and to_file is None:
        return
    data = record.as_dict()
    if json_format or to_file is not None:
        line = json.dumps(data, separators=(",", ":"))
        if to_file is not None:
            to_file.write(line)
        if json_format:
            if logged:
                log.info(line)
            return
    if not logged:
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
