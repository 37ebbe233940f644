"""`airgap-proxy iptables apply|remove|show`: install the redirect and leak-guard rules.

The rule text comes from `rules/redirect_rules.py` (pure); this module applies it, doing the
system side: read the config, resolve uids, upstream proxy names and DNS servers, read the
namespace's own addresses, find out whether IPv6 and IPv6 nat exist, read what is installed
now, and hand the text to `iptables-restore --noflush` or `nft -f` (each one transaction,
validated with `--test` / `-c` first). Every doubt ends in a refusal with a message, never
in fewer rules: a rule set with a hole looks exactly like a working one.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pac import addr
from rules.errors import ConfigError
from rules.redirect_rules import (
    DEFAULT_MARK,
    DEFAULT_PROXY_PORT,
    FAMILIES,
    NFT_TABLE,
    Family,
    FirewallError,
    FirewallSpec,
    IPv6Mode,
    SavedState,
    iptables_restore,
    iptables_script,
    nft_ruleset,
    nft_script,
    parse_saved,
    resolvers_from_resolv_conf,
)

RESOLV_CONF = Path("/etc/resolv.conf")
#: Where the kernel lists IPv6 addresses; missing means no IPv6 stack at all.
IF_INET6 = Path("/proc/net/if_inet6")
_TIMEOUT = 60.0
_SAVE = {"ipv4": "iptables-save", "ipv6": "ip6tables-save"}
_RESTORE = {"ipv4": "iptables-restore", "ipv6": "ip6tables-restore"}


class FirewallFailure(RuntimeError):
    """A system step failed; the message says what and what state it left."""


def _uid(text: str) -> int:
    """A uid from a number or a user name (argparse type)."""
    if text.isascii() and text.isdigit():  # "١٠٠٠".isdigit() is True too, and int() reads it
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user {text!r}") from None


def _mark(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 2**32:
        raise argparse.ArgumentTypeError("must be 1..0xffffffff (0 would exempt everything)")
    return value


def _port(text: str) -> int:
    try:
        return addr.parse_port(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be 1-65535") from None


def _hostport(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT (argparse type for --upstream)."""
    try:
        return addr.parse_hostport(text)
    except ValueError as exc:
        if "IPv6" in str(exc) and not text.startswith("["):
            raise argparse.ArgumentTypeError(f"{text!r}: write IPv6 as [ADDR]:PORT") from None
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT") from None


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `airgap-proxy iptables` options (the parser itself comes from proxy/cli.py)."""
    parser.add_argument(
        "action",
        choices=("apply", "remove", "show"),
        help="apply: install (replacing an earlier apply); remove: undo exactly that;"
        " show: print the commands apply would run now",
    )
    parser.add_argument(
        "--config", help="admin-settings.json: its transparentPorts and http/https proxies"
    )
    parser.add_argument(
        "--transparent-ports",
        metavar="PORTS",
        help='instead of --config: "*", "" or a list like "80,443,8000-8100"',
    )
    parser.add_argument("--backend", choices=("iptables", "nft"), default="iptables")
    parser.add_argument(
        "--proxy-port", type=_port, default=DEFAULT_PROXY_PORT, help="the proxy's listen port"
    )
    parser.add_argument(
        "--mark",
        type=_mark,
        default=DEFAULT_MARK,
        help=f"the mark `airgap-proxy run --mark` sets (default {DEFAULT_MARK:#x}); traffic"
        " with it is neither redirected nor guarded",
    )
    parser.add_argument(
        "--proxy-uid",
        type=_uid,
        metavar="UID",
        help="also exempt the proxy by uid (number or name); any process with that uid"
        " bypasses the proxy, so the mark is preferred",
    )
    parser.add_argument(
        "--exclude-uid",
        type=_uid,
        action="append",
        default=[],
        metavar="UID",
        help="repeatable: exempt another uid (an upstream proxy in this namespace)",
    )
    parser.add_argument(
        "--from-interface",
        action="append",
        default=[],
        metavar="IF",
        help="repeatable: also redirect (and guard) traffic forwarded from IF; the proxy"
        " must listen on IF's primary address",
    )
    parser.add_argument(
        "--forwarded-only",
        action="store_true",
        help="with --from-interface: police only traffic from those interfaces, not this"
        " host's own (a node-wide proxy on the pods' bridge)",
    )
    parser.add_argument(
        "--block-unredirected",
        action="store_true",
        help="leak guard: reject unredirected TCP to transparent ports, UDP except DNS to"
        " the resolvers, other protocols, and direct use of the upstream proxies",
    )
    parser.add_argument(
        "--dns-server",
        type=_ip,
        action="append",
        default=[],
        metavar="IP",
        help="repeatable: resolvers the guard allows (default: from /etc/resolv.conf)",
    )
    parser.add_argument(
        "--upstream",
        type=_hostport,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="repeatable: more upstream proxies that only the proxy may reach (those a PAC"
        " names); the config's http/https proxies are always included",
    )
    parser.add_argument(
        "--ipv6",
        choices=("redirect", "drop"),
        default="redirect",
        help="redirect IPv6 like IPv4 (apply refuses without IPv6 nat), or reject all"
        " IPv6 that would leave",
    )
    parser.add_argument(
        "--lockdown",
        action="store_true",
        help="apply/show the reject-all rule set that replaces the redirect when the proxy"
        " is gone (only traffic to this host's own addresses passes)",
    )


def main(args: argparse.Namespace) -> int:
    """Run one action; 0 on success, 1 when the system refused, 2 on bad input."""
    try:
        if args.action == "remove":
            backend = make_backend(args.backend)
            if backend.remove():
                print(f"airgap-proxy: rules removed ({args.backend})", file=sys.stderr)
            else:
                # Still success: the goal, no rules of ours, holds. The other backend's
                # rules are its own (see `remove --backend`).
                other = "nft" if args.backend == "iptables" else "iptables"
                print(
                    f"airgap-proxy: nothing to remove: no airgap-proxy rules are installed"
                    f" with {args.backend} (rules applied with --backend {other} are removed"
                    f" with `remove --backend {other}`)",
                    file=sys.stderr,
                )
            return 0
        spec = build_spec(args)
        backend = make_backend(args.backend)
        if args.action == "show":
            print(describe(spec), end="")
            print(backend.script(spec), end="")
            return 0
        backend.apply(spec)
        print(f"airgap-proxy: rules applied ({args.backend}); {summary(spec)}", file=sys.stderr)
        return 0
    except (FirewallError, ValueError, ConfigError) as exc:
        print(f"airgap-proxy iptables: {exc}", file=sys.stderr)
        return 2
    except FirewallFailure as exc:
        print(f"airgap-proxy iptables: {exc}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- building the spec


def build_spec(args: argparse.Namespace) -> FirewallSpec:
    """Turn options and config into a FirewallSpec, warning about what weakens it."""
    if args.lockdown:
        # Reject-all needs nothing from the config and no IPv6 nat: it must work when
        # whatever made the proxy fail is still broken.
        return FirewallSpec(
            ports=(),
            mark=args.mark,
            proxy_port=args.proxy_port,
            from_interfaces=tuple(args.from_interface),
            ipv6="drop" if IF_INET6.exists() else "absent",
            lockdown=True,
            forwarded_only=args.forwarded_only,
        )
    ipv6 = ipv6_mode(args.ipv6, args.backend)
    uids = [*([args.proxy_uid] if args.proxy_uid is not None else []), *args.exclude_uid]
    for uid in uids:
        warn(
            f"exempting uid {uid} by owner: every process running as uid {uid} in this"
            " network namespace bypasses the proxy (the mark does not have that weakness)"
        )
    ports, upstream_names = ports_and_upstreams(args.config, args.transparent_ports)
    upstreams = resolve_upstreams([*upstream_names, *args.upstream])
    if args.block_unredirected and not args.upstream and config_uses_pac(args.config):
        warn(
            "the policy is a PAC: the upstream proxies it names are not known here, so"
            " applications may connect to them directly, around the PAC; give each as"
            " --upstream HOST:PORT"
        )
    dns = tuple(args.dns_server) or default_dns_servers()
    if args.block_unredirected and not dns:
        warn("no DNS server found in /etc/resolv.conf: the guard lets no UDP out")
    if upstreams and not args.block_unredirected:
        warn(
            "without --block-unredirected nothing keeps applications from connecting to the"
            " upstream proxies directly (one on this host on any of its addresses)"
        )
    spec = FirewallSpec(
        ports=ports,
        proxy_port=args.proxy_port,
        mark=args.mark,
        exclude_uids=tuple(dict.fromkeys(uids)),
        from_interfaces=tuple(dict.fromkeys(args.from_interface)),
        block_unredirected=args.block_unredirected,
        dns_servers=dns,
        upstreams=upstreams,
        local_addresses=namespace_addresses(upstreams),
        ipv6=ipv6,
        forwarded_only=args.forwarded_only,
    )
    for name in spec.from_interfaces:
        note_interface(name, spec.proxy_port, ipv6)
    return spec


def ports_and_upstreams(
    config: str | None, ports_text: str | None
) -> tuple[tuple[tuple[int, int], ...] | None, list[tuple[str, int]]]:
    """Transparent ports (None: all) and the configured http/https proxies."""
    if config is not None and ports_text is not None:
        raise ValueError("give --config or --transparent-ports, not both")
    if config is not None:
        from rules.config import load_config

        cfg = load_config(config)
        portset = cfg.transparent_ports
        routes = [r for r in (cfg.http, cfg.https) if r is not None]
        upstreams = [(r.host, r.port) for r in routes]
    else:
        from rules.ports import parse_transparent_ports

        portset = parse_transparent_ports("80,443" if ports_text is None else ports_text)
        upstreams = []
    ports = None if portset.is_all else tuple(portset.ranges())
    return ports, list(dict.fromkeys(upstreams))


def config_uses_pac(config: str | None) -> bool:
    """Whether the config's policy is a PAC (whose proxies only the script knows)."""
    if config is None:
        return False
    from rules.config import load_config

    return load_config(config).uses_pac


def resolve_upstreams(upstreams: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """Every address of every upstream proxy; a name that does not resolve is refused."""
    out: list[tuple[str, int]] = []
    for host, port in upstreams:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ValueError(
                f"cannot resolve upstream proxy {host!r} ({exc}); the guard must know its"
                " addresses: give them as --upstream IP:PORT"
            ) from None
        for info in infos:
            ip = addr.canonical_ip(str(info[4][0]))
            if (ip, port) not in out:
                out.append((ip, port))
    return tuple(out)


def namespace_addresses(upstreams: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """This namespace's own addresses (`ip -j addr`), to tell which upstreams are local.

    Needed only for an upstream that is neither loopback nor unspecified: if it is one of
    these addresses, a wildcard-bound server answers on all of them and the guard must know.
    When they cannot be read, guessing "remote" would leave every other local address open,
    so apply refuses.
    """
    candidates = [ip for ip, _ in upstreams if not FirewallSpec().is_local(ip)]
    if not candidates:
        return ()
    result = run(["ip", "-j", "addr", "show"])
    try:
        if result.returncode != 0:
            raise ValueError((result.stderr or "").strip())
        infos = json.loads(result.stdout)
        addrs = [str(a["local"]) for i in infos for a in i.get("addr_info", []) if "local" in a]
        found = tuple(dict.fromkeys(str(ipaddress.ip_address(a.split("%", 1)[0])) for a in addrs))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise FirewallFailure(
            f"cannot read this namespace's addresses (ip -j addr show: {exc}): the guard must"
            f" know whether the upstream proxies ({', '.join(candidates)}) are on this host"
        ) from None
    return found


def default_dns_servers() -> tuple[str, ...]:
    """The resolvers in /etc/resolv.conf (and Docker's ExtServers comment)."""
    try:
        return resolvers_from_resolv_conf(RESOLV_CONF.read_text(errors="replace"))
    except OSError:
        return ()


def ipv6_mode(requested: str, backend: str) -> IPv6Mode:
    """`absent` when the kernel has no IPv6; else the request, checked for nat support."""
    if not IF_INET6.exists():
        warn("this kernel has no IPv6: IPv6 rules are not needed and not installed")
        return "absent"
    if requested == "drop":
        return "drop"
    if not ipv6_nat_available(backend):
        raise FirewallFailure(
            "IPv6 nat is not available here, so IPv6 cannot be redirected; refusing to"
            " leave IPv6 open. Use --ipv6 drop to reject all IPv6 instead."
        )
    return "redirect"


def ipv6_nat_available(backend: str) -> bool:
    """Ask the kernel (a checked, never committed transaction) for an IPv6 nat chain."""
    probe_nft = (
        "table ip6 airgap_proxy_probe {\n"
        "\tchain c { type nat hook output priority -100; policy accept; }\n}\n"
    )
    if backend == "nft" or _which("nft"):
        return run(["nft", "-c", "-f", "-"], probe_nft).returncode == 0
    probe = "*nat\n:AIRGAP-PROBE - [0:0]\n-A AIRGAP-PROBE -p tcp -j REDIRECT --to-ports 1\nCOMMIT\n"
    return run(["ip6tables-restore", "--test", "--noflush"], probe).returncode == 0


def note_interface(name: str, port: int, ipv6: IPv6Mode) -> None:
    """Say where REDIRECT from `name` delivers: the interface's primary address."""
    result = run(["ip", "-j", "addr", "show", "dev", name])
    if result.returncode != 0:
        warn(f"--from-interface {name}: no such interface now; the rules match it by name")
        return
    try:
        infos = json.loads(result.stdout or "[]")
    except ValueError:
        infos = []
    addrs = [a for i in infos for a in i.get("addr_info", [])]
    v4 = [a["local"] for a in addrs if a.get("family") == "inet" and not a.get("secondary")]
    v6 = [a["local"] for a in addrs if a.get("family") == "inet6" and a.get("scope") == "global"]
    if not v4:
        warn(f"--from-interface {name}: no IPv4 address, so redirected IPv4 from it is dropped")
    else:
        warn(
            f"--from-interface {name}: REDIRECT delivers to its primary address {v4[0]}:{port};"
            f" the proxy must listen there (--listen {v4[0]}:{port} or 0.0.0.0:{port})"
        )
    if ipv6 == "redirect" and v6:
        warn(
            f"--from-interface {name}: IPv6 is delivered to [{v6[0]}]:{port}"
            f" (--listen [{v6[0]}]:{port} or [::]:{port})"
        )


def describe(spec: FirewallSpec) -> str:
    """Comment lines that head `show`: what the rules do, in words."""
    return f"# airgap-proxy iptables: {summary(spec)}\n"


def summary(spec: FirewallSpec) -> str:
    """One line about the rule set."""
    if spec.lockdown and spec.forwarded_only:
        return (
            "lockdown: everything forwarded from "
            + ",".join(spec.from_interfaces)
            + (" is rejected")
        )
    if spec.lockdown:
        return "lockdown: everything that would leave this host is rejected"
    if spec.ports is None:
        ports = "all TCP ports"
    elif spec.ports:
        ports = "TCP " + ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spec.ports)
    else:
        ports = "no ports"
    parts = [f"{ports} -> proxy port {spec.proxy_port}", f"mark {spec.mark:#x} exempt"]
    if spec.exclude_uids:
        parts.append("uids " + ",".join(map(str, spec.exclude_uids)) + " exempt")
    if spec.forwarded_only:
        parts.append("only from " + ",".join(spec.from_interfaces) + "; this host's own not")
    elif spec.from_interfaces:
        parts.append("also from " + ",".join(spec.from_interfaces))
    parts.append("leak guard on" if spec.block_unredirected else "leak guard off")
    local_ports = spec.local_upstream_ports
    if spec.block_unredirected and local_ports:
        parts.append(
            "upstream proxy port " + ",".join(map(str, local_ports)) + " guarded on every"
            " local address"
        )
    parts.append(
        {"redirect": "IPv6 redirected", "drop": "IPv6 rejected", "absent": "no IPv6"}[spec.ipv6]
    )
    return "; ".join(parts)


def warn(text: str) -> None:
    """Warnings go to stderr, so `show` output stays runnable."""
    print(f"airgap-proxy iptables: warning: {text}", file=sys.stderr)


# ---------------------------------------------------------------- running the tools


def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool with a time bound; a missing tool is a failed result, not a crash."""
    try:
        return subprocess.run(
            cmd, input=stdin, text=True, capture_output=True, timeout=_TIMEOUT, check=False
        )
    except FileNotFoundError:
        return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{cmd[0]}: timed out")


def _which(tool: str) -> bool:
    return any(
        os.access(os.path.join(d, tool), os.X_OK)
        for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep)
    )


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise FirewallFailure(f"{what} failed (exit {result.returncode}): {detail}")


@dataclass(frozen=True, slots=True)
class IptablesBackend:
    """iptables-restore --noflush, one transaction per table and family."""

    def families(self) -> tuple[Family, ...]:
        return FAMILIES if IF_INET6.exists() else ("ipv4",)

    def state(self, family: Family) -> SavedState:
        result = run([_SAVE[family]])
        _check(result, _SAVE[family])
        return parse_saved(result.stdout)

    def script(self, spec: FirewallSpec) -> str:
        """Commands that do what apply does, whatever is installed when they run."""
        return iptables_script(spec, self.families())

    def apply(self, spec: FirewallSpec | None) -> None:
        """Validate every family's text first, then commit each (guard before redirect)."""
        families = [
            f for f in self.families() if spec is None or spec.ipv6 != "absent" or f == "ipv4"
        ]
        texts = {f: iptables_restore(spec, f, self.state(f)) for f in families}
        for family, text in texts.items():
            if text:
                _check(
                    run([_RESTORE[family], "--test", "--noflush"], text),
                    f"{_RESTORE[family]} --test",
                )
        done: list[str] = []
        for family, text in texts.items():
            if not text:
                continue
            result = run([_RESTORE[family], "--noflush"], text)
            if result.returncode != 0:
                raise FirewallFailure(
                    f"{_RESTORE[family]} failed: {(result.stderr or '').strip()}; already"
                    f" committed: {', '.join(done) or 'nothing'} (each table commits on its"
                    " own, the guard before the redirect); fix and apply again, or apply"
                    " --lockdown"
                )
            done.append(family)

    def remove(self) -> bool:
        """Undo apply; False when nothing of ours was installed (and nothing was run)."""
        if all(self.state(f).empty for f in self.families()):
            return False
        self.apply(None)
        return True


@dataclass(frozen=True, slots=True)
class NftBackend:
    """One `nft -f` transaction for everything, in a table of its own."""

    def script(self, spec: FirewallSpec) -> str:
        return nft_script(spec)

    def apply(self, spec: FirewallSpec | None) -> None:
        text = nft_ruleset(spec)
        _check(run(["nft", "-c", "-f", "-"], text), "nft -c (check)")
        _check(run(["nft", "-f", "-"], text), "nft -f")

    def remove(self) -> bool:
        """Delete our table; False when there was none (and nothing was run)."""
        if run(["nft", "list", "table", "inet", NFT_TABLE]).returncode != 0:
            return False
        self.apply(None)
        return True


def make_backend(name: str) -> IptablesBackend | NftBackend:
    """The backend object for `--backend`."""
    return NftBackend() if name == "nft" else IptablesBackend()


def standalone(argv: Sequence[str] | None = None) -> int:
    """`python -m proxy.firewall_apply ...`: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="airgap-proxy iptables")
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(standalone())
