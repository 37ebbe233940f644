"""`airgap-proxy explain`, run as the proxy runs: the PAC fetched and evaluated by the
proxy's own code, the name looked up by the proxy's resolver (or a `--resolve` table), and
the route selection of `rules.routing` on the answer. The pure parts are in `rules.explain`.
"""

from __future__ import annotations

import asyncio

from proxy.launch import PacOptions, make_source
from proxy.pac_decider import PacDecider
from proxy.resolver import NameResolver
from rules.config import ContainersProxyConfig
from rules.explain import (
    explain_destination,
    explanation,
    name_to_check,
    select_routes,
    with_note,
)
from rules.model import Decision, Destination
from rules.policy import Policy


class TableResolver(NameResolver):
    """Hermetic DNS for `--resolve`: the table's answers; a name not in it does not resolve
    (as `pac-eval --resolve`), so an answer never depends on the machine explain runs on."""

    def __init__(self, table: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.table = table

    async def _lookup(self, loop: asyncio.AbstractEventLoop, name: str) -> tuple[str, ...]:
        return self.table.get(name, ())


async def run_explain(
    cfg: ContainersProxyConfig,
    policy: Policy,
    pac: PacOptions | None,
    dest_text: str,
    ip: str | None,
    client: str | None = None,
    table: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, object]:
    """The `explain` JSON for DEST: decision, then route selection. `pac`: the PAC options
    when the policy uses a PAC. `table`: `--resolve` answers (None: real lookups)."""
    dest, note = explain_destination(policy, dest_text, ip, client)
    resolver: NameResolver = TableResolver(table) if table is not None else NameResolver()
    notes: list[str] = []
    if pac is None:
        decision = await policy.decide(dest)
    else:
        decision, script = await _decide_with_pac(cfg, policy, pac, dest, resolver)
        if client is None and script is not None and "myIpAddress" in script:
            notes.append(
                "the PAC calls myIpAddress() and no --client was given: it answered"
                " 127.0.0.1 here; in the proxy it is the container's address"
            )
    decision = with_note(decision, note)
    name = name_to_check(dest, decision)
    addrs = None
    dns: dict[str, tuple[str, ...]] = {}
    if name is not None:
        addrs = await resolver.resolve(name)
        dns[name] = addrs
        where = "the --resolve table" if table is not None else "this machine's resolver"
        if not addrs:
            notes.append(f"{name} does not resolve with {where}")
        elif table is None:
            notes.append(
                f"{name} was resolved with this machine's resolver: the proxy's, in its own"
                " network, may answer otherwise (use --resolve NAME=IP to fix the answer)"
            )
    return explanation(decision, select_routes(dest, decision, addrs), notes, dns)


async def _decide_with_pac(
    cfg: ContainersProxyConfig,
    policy: Policy,
    pac: PacOptions,
    dest: Destination,
    resolver: NameResolver,
) -> tuple[Decision, str | None]:
    """Fetch the PAC once, as the proxy does, and decide `dest` with it (the script's DNS
    answers from `resolver`); also the script, or None when none loaded."""
    decider = PacDecider(resolver, pac.limits, pac.engine, evaluators=1)
    try:
        source = make_source(cfg, pac, decider.set_snapshot)
        if source.inline is not None:
            await source.run()
        else:
            await source.refresh_once()
            await source.close()
        decision = await policy.with_pac_decider(decider).decide(dest)
        return decision, decider.snapshot.script
    finally:
        await decider.aclose()
