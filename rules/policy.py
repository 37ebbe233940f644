"""`Policy.decide()`: one connection's destination in, one `Decision` out.

The decision order is Docker Desktop's documented precedence:

1. a port outside `transparentPorts` goes DIRECT, no policy (not on the explicit proxy
   path, `Destination.explicit`, where every port is decided by the rules below);
2. `manual` mode with a PAC (`embeddedPac`, else `pac`): the PAC decides alone. PAC
   evaluation is not part of this package: a `Decider` is plugged in by whoever builds
   the PAC engine; until one is, every such connection is REJECTed (fail closed);
3. `manual` without a PAC: an exclude match (original IP first, then the sniffed name) goes
   DIRECT; otherwise port 80 uses `http` and every other port `https`; an empty one REJECTs;
4. `system`: the same shape from the proxy environment (`rules.system_env`), where a missing
   proxy means DIRECT, as curl would do.

In 3 and 4, a proxy that names the block sentinel `reject.docker.internal` (in any spelling
`pac.sentinel` recognises, as in a PAC result) REJECTs instead of being connected to: whoever
wrote it meant "block", and a resolver that answers for `.internal` names must not turn it
into a route.

Everything that can be computed once is computed in the constructor; `decide_now()` is pure
and called once per connection. A `Policy` is itself a `rules.model.Decider`: `decide_now`
answers every static decision and whatever the PAC decider answers at once (its cache);
`decide` awaits the PAC evaluation otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from netaddr import IPAddress

from pac.routes import DIRECT, Route
from pac.sentinel import REJECT_HOST, names_reject_sentinel
from rules.exclude import ExcludeMatcher, parse_ip
from rules.model import Decider, Decision, Destination
from rules.ports import PortSet
from rules.settings import ContainersProxyConfig, Mode
from rules.system_env import read_system_proxy

PAC_INACTIVE_REASON = "PAC policy not active in this build"
_CACHE_SIZE = 8192


@dataclasses.dataclass(frozen=True, slots=True)
class _Static:
    """The static (non-PAC) rules of one mode, in the words the reasons use."""

    bypass: ExcludeMatcher
    bypass_word: str  # "exclude entry" / "no_proxy entry"
    http: Route | None
    https: Route | None
    http_word: str  # the key: "http" / "http_proxy"
    https_word: str
    proxy_noun: str  # "the {} proxy" / "{}"
    missing: Literal["REJECT", "DIRECT"]  # what an empty proxy means in this mode
    prefix: str  # "" / "system mode: "


class Policy:
    """The static policy of one configuration. Build with `Policy.from_config`."""

    def __init__(
        self,
        *,
        mode: Mode,
        transparent_ports: PortSet,
        static: _Static,
        pac_source: str | None,
        pac_decider: Decider | None = None,
        warnings: tuple[str, ...] = (),
    ) -> None:
        self.mode = mode
        self.transparent_ports = transparent_ports
        self.pac_source = pac_source
        self.warnings = warnings
        self._static = static
        self._pac_decider = pac_decider
        self._cache: dict[tuple[str, int, str | None, bool], Decision] = {}

    @classmethod
    def from_config(
        cls,
        cfg: ContainersProxyConfig,
        environ: Mapping[str, str],
        pac_decider: Decider | None = None,
    ) -> Policy:
        """Build the policy; `environ` is only read in system mode (ConfigError if malformed).

        `policy.warnings` holds the config's warnings plus the environment's, for start-up logs.
        """
        warnings = list(cfg.warnings)
        pac_source: str | None = None
        if cfg.mode == "system":
            env = read_system_proxy(environ)
            warnings.extend(env.warnings)
            static = _Static(
                bypass=env.no_proxy,
                bypass_word="no_proxy entry",
                http=env.http,
                https=env.https,
                http_word=env.http_var or "http_proxy",
                https_word=env.https_var or "https_proxy",
                proxy_noun="{}",
                missing="DIRECT",
                prefix="system mode: ",
            )
        else:
            if cfg.embedded_pac is not None:
                pac_source = "embeddedPac"
            elif cfg.pac is not None:
                pac_source = "pac"
            static = _Static(
                bypass=cfg.exclude,
                bypass_word="exclude entry",
                http=cfg.http,
                https=cfg.https,
                http_word="http",
                https_word="https",
                proxy_noun="the {} proxy",
                missing="REJECT",
                prefix="",
            )
        if pac_source is None:
            warnings.extend(_sentinel_warnings(static))
        return cls(
            mode=cfg.mode,
            transparent_ports=cfg.transparent_ports,
            static=static,
            pac_source=pac_source,
            pac_decider=pac_decider,
            warnings=tuple(warnings),
        )

    @property
    def uses_pac(self) -> bool:
        """True when a PAC decides every policed connection (manual mode, pac/embeddedPac)."""
        return self.pac_source is not None

    @property
    def upstreams(self) -> tuple[Route | None, Route | None]:
        """The static (http, https) proxies in force (from the config, or the environment in
        system mode); their credentials are the caller's to keep out of sight."""
        return self._static.http, self._static.https

    @property
    def pac_active(self) -> bool:
        """True when a PAC decider is installed; without one, PAC policies REJECT."""
        return self._pac_decider is not None

    @property
    def depends_on_ip(self) -> bool:
        """True when a decision may depend on the destination IP, not only on the name.

        A PAC may look at the IP; static rules only when some bypass entry is an address.
        """
        return self.uses_pac or self._static.bypass.has_ip_entries

    @property
    def matches_resolved_addresses(self) -> bool:
        """True when the explicit path must resolve a name before deciding: static rules
        with IP or CIDR bypass entries, which match the addresses the proxy resolved for a
        requested name there (a PAC looks names up itself)."""
        return not self.uses_pac and self._static.bypass.has_ip_entries

    def with_pac_decider(self, decider: Decider) -> Policy:
        """The same policy with PAC decisions delegated to `decider`."""
        return Policy(
            mode=self.mode,
            transparent_ports=self.transparent_ports,
            static=self._static,
            pac_source=self.pac_source,
            pac_decider=decider,
            warnings=self.warnings,
        )

    def decide_now(self, dest: Destination) -> Decision | None:
        """The decision for one connection (see the module docstring for the order), or None
        when the PAC decider must evaluate first (then await `decide`).

        `dest.ip` == "" means the IP is unknown (`explain` without --ip): IP/CIDR entries
        cannot match then. An IPv4-mapped `dest.ip` is folded to IPv4 first.
        """
        key = (dest.ip, dest.port, dest.hostname, dest.explicit)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        ip = parse_ip(dest.ip)
        if ip is not None and str(ip) != dest.ip:
            dest = dataclasses.replace(dest, ip=str(ip))
        if not dest.explicit and dest.port not in self.transparent_ports:
            return _decision(dest, "DIRECT", (DIRECT,), f"port {dest.port} not in transparentPorts")
        if self.pac_source is not None:
            if self._pac_decider is None:
                return _decision(dest, "REJECT", (), PAC_INACTIVE_REASON)
            return self._pac_decider.decide_now(dest)
        decision = self._decide_static(dest, ip)
        # Static decisions depend on (ip, port, name, path) alone: keep them, bounded. A new
        # configuration builds a new Policy, so the cache cannot outlive its rules.
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    async def decide(self, dest: Destination) -> Decision:
        """The decision for one connection, awaiting the PAC evaluation when one is needed."""
        decision = self.decide_now(dest)
        if decision is not None:
            return decision
        if self._pac_decider is None:  # decide_now answers every non-PAC case itself
            raise RuntimeError("no decision and no PAC decider")
        ip = parse_ip(dest.ip)
        if ip is not None and str(ip) != dest.ip:
            dest = dataclasses.replace(dest, ip=str(ip))
        return await self._pac_decider.decide(dest)

    def _decide_static(self, dest: Destination, ip: IPAddress | None) -> Decision:
        s = self._static
        hit = s.bypass.match(dest.hostname, ip)
        if hit is not None:
            reason = s.prefix + hit.describe(s.bypass_word)
            return _decision(dest, "DIRECT", (DIRECT,), reason, name_based=hit.by_name)
        if dest.port == 80:
            route, word = s.http, s.http_word
        else:
            route, word = s.https, s.https_word
        unmatched = f" (no {s.bypass_word} matched)" if s.bypass else ""
        if route is not None and is_sentinel_route(route):
            noun = s.proxy_noun.format(word)
            reason = (
                f"{s.prefix}port {dest.port}: {noun} names the block sentinel {REJECT_HOST}:"
                f" blocked{unmatched}"
            )
            return _decision(dest, "REJECT", (), reason)
        if route is not None:
            noun = s.proxy_noun.format(word)
            reason = f"{s.prefix}port {dest.port} uses {noun} {route}{unmatched}"
            return _decision(dest, "PROXY", (route,), reason)
        if s.missing == "DIRECT":
            reason = f"{s.prefix}{word} not set in the environment: direct{unmatched}"
            return _decision(dest, "DIRECT", (DIRECT,), reason)
        reason = f"no proxy configured for {word}: blocked{unmatched}"
        return _decision(dest, "REJECT", (), reason)


def is_sentinel_route(route: Route) -> bool:
    """True when a static proxy names the block sentinel (host or user name, any spelling)."""
    return names_reject_sentinel(route.host) or names_reject_sentinel(route.username or "")


def _sentinel_warnings(s: _Static) -> list[str]:
    """Say at start-up that a static proxy is the block sentinel, so it is not a surprise."""
    out = []
    for route, word, ports in (
        (s.http, s.http_word, "port 80"),
        (s.https, s.https_word, "other ports"),
    ):
        if route is not None and is_sentinel_route(route):
            out.append(
                f"{s.prefix}{word} names the block sentinel {REJECT_HOST}: connections to"
                f" {ports} are REJECTed unless a {s.bypass_word} matches"
            )
    return out


def _decision(
    dest: Destination,
    action: Literal["DIRECT", "PROXY", "REJECT"],
    routes: tuple[Route, ...],
    reason: str,
    name_based: bool = False,
) -> Decision:
    return Decision(action, routes, reason, dest.url, dest.host, name_based)
