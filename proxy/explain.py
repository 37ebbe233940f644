"""`airgap-proxy explain`, run as the proxy runs: the PAC fetched and evaluated by the
proxy's own code, the name looked up by the proxy's resolver (or a `--resolve` table), and
the route selection of `rules.routing` on the answer. The pure parts are in `rules.explain`.
"""

from __future__ import annotations

import asyncio

from proxy.explicit_decide import Explicit, decide_explicit, explicit_destination
from proxy.launch import PacOptions, make_source
from proxy.pac_decider import PacDecider
from proxy.resolver import NameResolver
from rules.config import ContainersProxyConfig
from rules.explain import (
    _is_ip,
    _parse_ip_option,
    explain_destination,
    explanation,
    name_to_check,
    parse_dest,
    select_explicit_routes,
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


async def run_explain_explicit(
    cfg: ContainersProxyConfig,
    policy: Policy,
    pac: PacOptions | None,
    dest_text: str,
    client: str | None = None,
    table: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, object]:
    """`explain --explicit DEST`: what the explicit listener does with a request for DEST
    (any port is decided by the policy; a name is resolved by the proxy for DIRECT)."""
    host, port = parse_dest(dest_text)
    client_ip = _parse_ip_option(client, "--client") if client is not None else None
    is_ip = _is_ip(host)
    dest = explicit_destination(host, port, is_ip, client_ip)
    resolver: NameResolver = TableResolver(table) if table is not None else NameResolver()
    notes: list[str] = []
    if pac is None:
        explicit = await decide_explicit(policy, resolver, dest)
    else:
        explicit = await _decide_explicit_with_pac(cfg, policy, pac, dest, resolver)
    decision = explicit.decision
    addrs: tuple[str, ...] | None = None
    dns: dict[str, tuple[str, ...]] = {}
    if explicit.pinned is not None:
        addrs = (explicit.pinned,)
    elif dest.hostname is None:
        addrs = (dest.ip,)
    elif decision.action != "REJECT" and any(r.kind == "DIRECT" for r in decision.routes):
        addrs = await resolver.resolve(dest.hostname)
        dns[dest.hostname] = addrs
        if table is None:
            notes.append(
                f"{dest.hostname} was resolved with this machine's resolver: the proxy's, in"
                " its own network, may answer otherwise (use --resolve NAME=IP to fix it)"
            )
    return explanation(decision, select_explicit_routes(dest, decision, addrs), notes, dns)


async def _decide_explicit_with_pac(
    cfg: ContainersProxyConfig,
    policy: Policy,
    pac: PacOptions,
    dest: Destination,
    resolver: NameResolver,
) -> Explicit:
    decider = PacDecider(resolver, pac.limits, pac.engine, evaluators=1)
    try:
        source = make_source(cfg, pac, decider.set_snapshot)
        if source.inline is not None:
            await source.run()
        else:
            await source.refresh_once()
            await source.close()
        return await decide_explicit(policy.with_pac_decider(decider), resolver, dest)
    finally:
        await decider.aclose()


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
