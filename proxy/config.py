"""The `airgap-proxy run` configuration: one frozen, typed value, and the one place defaults live.

What the operator chose (this module) is kept apart from what a running worker holds
(`proxy.connection.ProxyContext`: open connections, the peek deadlines, the bad-proxy list),
as uvicorn keeps `Config` apart from `ServerState`. The command line reads its defaults from
`DEFAULTS`, so a default is written once; the runtime objects are built from a `RunConfig`.
A policy reload (`proxy.policy_feed`) swaps the policy, never this value's bounds: nothing
here changes while the proxy runs, and no command-line option is reloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from pac.sandbox import Limits

#: The transparent listeners when `--listen` is not given (Istio's outbound port).
DEFAULT_LISTEN: tuple[tuple[str, int], ...] = (("127.0.0.1", 15001), ("::1", 15001))
#: The admin endpoint when `--admin-listen` is not given (Istio's admin port).
DEFAULT_ADMIN_LISTEN: tuple[str, int] = ("127.0.0.1", 15000)

PacEngineName = Literal["pacparser", "dukpy"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

#: The PAC library's own bounds (what `pac-eval` uses too): one evaluation's time and memory.
_ENGINE_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class PacConfig:
    """How PAC scripts are fetched and evaluated (the `--pac-*` options)."""

    #: Seconds between downloads of a PAC URL (and re-reads of a PAC file).
    refresh: float = 300.0
    #: Seconds one download may take (`--pac-timeout`).
    fetch_timeout: float = 10.0
    #: Longest pause between retries after a failed download (backoff up to it).
    retry_max: float = 60.0
    #: Seconds the last good script stays in force after downloads fail (0: fail closed now).
    stale_grace: float = 0.0
    #: Largest script accepted, in bytes (download and file alike).
    max_bytes: int = _ENGINE_LIMITS.script_bytes
    #: Seconds one `FindProxyForURL` call may take.
    eval_timeout: float = _ENGINE_LIMITS.time
    #: Address space one engine process may use beyond the interpreter's own, in MiB.
    memory_mib: int = _ENGINE_LIMITS.memory >> 20
    engine: PacEngineName = "pacparser"
    #: Engine processes per worker.
    evaluators: int = 2
    #: Evaluations that may wait for an engine; past that: REJECT (PAC overloaded).
    queue: int = 256

    def limits(self) -> Limits:
        """The sandbox bounds of one script."""
        return Limits(
            time=self.eval_timeout, memory=self.memory_mib << 20, script_bytes=self.max_bytes
        )


def _cpus() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Every `airgap-proxy run` option, validated, as the runtime takes them."""

    #: admin-settings.json; None: the bundled block-all policy.
    config_path: str | None = None
    #: A second admin-settings.json decided beside the enforced one, for the audit only.
    shadow_config_path: str | None = None
    #: A file the audit lines are appended to as JSON lines (besides stderr).
    audit_log: str | None = None
    #: The transparent listeners; empty (`--listen none`) for an explicit-only proxy.
    listen: tuple[tuple[str, int], ...] = DEFAULT_LISTEN
    #: The explicit (forward) proxy listeners, `--explicit-listen`; none by default.
    explicit_listen: tuple[tuple[str, int], ...] = ()
    #: True when `listen` is the default (a host without IPv6 then skips `[::1]` quietly).
    listen_is_default: bool = True
    #: Seconds a client on 80/443 has to send its hello or request head.
    peek_timeout: float = 2.0
    connect_timeout: float = 10.0
    #: Seconds a relay may move no byte before it is closed.
    idle_timeout: float = 600.0
    #: Seconds open relays may go on after SIGTERM before they are cut.
    drain_timeout: float = 30.0
    #: Connections held at once per worker; 0: as many as the descriptor limit allows.
    max_connections: int = 0
    splice: bool = False
    #: SO_MARK on the proxy's own sockets; None: no mark (the CLI resolves the default).
    mark: int | None = None
    workers: int = field(default_factory=_cpus)
    #: CA file for `HTTPS h:p` proxies (replaces the system store) and PAC URLs (added to it).
    ca_bundle: str | None = None
    #: Seconds a proxy that could not be used is tried last.
    bad_proxy_ttl: float = 300.0
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"
    #: Set for a worker of a supervisor: the listeners are shared with SO_REUSEPORT.
    reuse_port: bool = False
    pac: PacConfig = field(default_factory=PacConfig)
    #: Where `/healthz`, `/readyz`, `/status` and `/metrics` are served; None: nowhere.
    admin_listen: tuple[str, int] | None = DEFAULT_ADMIN_LISTEN

    @property
    def json_logs(self) -> bool:
        return self.log_format == "json"


#: The defaults, for the command line and for tests that need "what `run` does by default".
DEFAULTS = RunConfig()
