"""`exclude` entries and the matcher that says which entry let a connection go DIRECT.

Semantics (vpnkit-compatible suffix matching):

- `example.com` matches `example.com` and every name below it;
- `.example.com` and `*.example.com` match names below it only, at any depth;
- a `*` label matches exactly one label (`api.*.example.com`), and extra labels on the left
  always match, as for plain suffixes;
- trailing dots are ignored on both sides, names compare case-insensitively (canonical form);
- IPv4/IPv6 addresses and CIDRs (through netaddr) match the original destination IP only,
  never a name or an address resolved from a sniffed name; IPv4-mapped IPv6 is IPv4.

Matching is precomputed at construction: plain suffixes are a dict lookup per label of the
name, wildcard patterns and IP ranges a short scan. The first entry in configuration order
wins when several match, so the reason a user reads names the entry they wrote first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from netaddr import INET_PTON, AddrFormatError, IPAddress, IPNetwork

from rules.names import MAX_NAME, NUMERIC_LABEL, canonical_label, is_ip_literal

_PREFIX = re.compile(r"[0-9]{1,3}")
_SEPARATORS = re.compile(r"[,\s]+")


@dataclass(frozen=True, slots=True)
class NamePattern:
    """A parsed name entry: labels right to left, `*` for one wildcard label."""

    entry: str
    labels_rev: tuple[str, ...]
    subdomains_only: bool

    @property
    def has_wildcard(self) -> bool:
        return "*" in self.labels_rev


@dataclass(frozen=True, slots=True)
class IPRange:
    """A parsed address or CIDR entry as an integer range of one IP version."""

    entry: str
    version: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class ExcludeMatch:
    """Which entry matched, and whether on the sniffed name or the original IP."""

    entry: str
    by: Literal["name", "ip", "any"]
    value: str

    @property
    def by_name(self) -> bool:
        """True only when the match rests on the sniffed name (it must then be verified)."""
        return self.by == "name"

    def describe(self, what: str = "exclude entry") -> str:
        """`exclude entry '*.corp.example' matched name 'a.corp.example'`."""
        if self.by == "any":
            return f"{what} {self.entry!r} matches every destination"
        return f"{what} {self.entry!r} matched {self.by} {self.value!r}"


Entry = NamePattern | IPRange


def split_entries(value: str | list[str]) -> list[str]:
    """An `exclude` value as a list: arrays as given, strings split on commas/whitespace."""
    if isinstance(value, str):
        return [e for e in _SEPARATORS.split(value) if e]
    return [e.strip() for e in value if e.strip()]


def parse_entry(text: str) -> Entry:
    """Parse one exclude entry; ValueError says what is wrong with it."""
    entry = text.strip()
    if not entry:
        raise ValueError("empty entry")
    if "/" in entry:
        return _parse_cidr(entry)
    bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    try:
        addr = IPAddress(bare, flags=INET_PTON)
    except (AddrFormatError, ValueError):
        addr = None
    if addr is not None:
        return _range(entry, _fold(addr).value, _fold(addr).version, 0)
    if ":" in entry or is_ip_literal(bare):
        raise ValueError(f"{entry!r} is not a valid IP address (and ports are not supported)")
    return parse_name_pattern(entry)


def parse_name_pattern(entry: str) -> NamePattern:
    """`example.com`, `.example.com`, `*.example.com`, `a.*.example.com` -> NamePattern."""
    body = entry[:-1] if entry.endswith(".") else entry
    subdomains_only = False
    if body.startswith("*."):
        body, subdomains_only = body[2:], True
    elif body.startswith("."):
        body, subdomains_only = body[1:], True
    if not body:
        raise ValueError(f"{entry!r} names no domain")
    labels: list[str] = []
    for part in body.split("."):
        if part == "*":
            labels.append("*")
            continue
        if "*" in part:
            raise ValueError(f"{entry!r}: '*' must be a whole label (like '*.example.com')")
        label = canonical_label(part)
        if label is None:
            raise ValueError(f"{entry!r} is not a valid host name or domain")
        labels.append(label)
    if len(".".join(labels)) > MAX_NAME:
        raise ValueError(f"{entry!r} is longer than {MAX_NAME} characters")
    if labels[-1] != "*" and NUMERIC_LABEL.fullmatch(labels[-1]):
        raise ValueError(f"{entry!r} is neither a valid IP address nor a host name")
    return NamePattern(entry, tuple(reversed(labels)), subdomains_only)


def _parse_cidr(entry: str) -> IPRange:
    addr_text, _, prefix_text = entry.partition("/")
    try:
        addr = IPAddress(addr_text, flags=INET_PTON)
    except (AddrFormatError, ValueError):
        raise ValueError(f"bad CIDR {entry!r}: {addr_text!r} is not an IP address") from None
    bits = 32 if addr.version == 4 else 128
    if not _PREFIX.fullmatch(prefix_text) or int(prefix_text) > bits:
        raise ValueError(f"bad CIDR {entry!r}: prefix length must be 0-{bits}")
    net = IPNetwork(f"{addr}/{int(prefix_text)}")
    if net.version == 6 and net.prefixlen >= 96 and IPAddress(net.first, 6).is_ipv4_mapped():
        net = IPNetwork(f"{IPAddress(net.first, 6).ipv4()}/{net.prefixlen - 96}")
    return _range(entry, net.first, net.version, net.size - 1)


def _range(entry: str, first: int, version: int, span: int) -> IPRange:
    return IPRange(entry, version, first, first + span)


def _fold(addr: IPAddress) -> IPAddress:
    return addr.ipv4() if addr.version == 6 and addr.is_ipv4_mapped() else addr


def parse_ip(text: str) -> IPAddress | None:
    """The destination IP as netaddr sees it, IPv4-mapped folded; None if unusable/unknown."""
    if not text:
        return None
    try:
        return _fold(IPAddress(text, flags=INET_PTON))
    except (AddrFormatError, ValueError):
        return None


class ExcludeMatcher:
    """Precomputed exclude entries; `match()` is called once per connection."""

    def __init__(self, entries: list[Entry], match_everything: str | None = None) -> None:
        """`match_everything` is the entry text of curl's lone `*` (no_proxy only)."""
        self.entries = tuple(entries)
        self._everything = match_everything
        self._ip: list[tuple[int, IPRange]] = []
        self._suffix: dict[str, tuple[int, NamePattern]] = {}
        self._suffix_sub: dict[str, tuple[int, NamePattern]] = {}
        self._wild: list[tuple[int, NamePattern]] = []
        for order, e in enumerate(entries):
            if isinstance(e, IPRange):
                self._ip.append((order, e))
            elif e.has_wildcard:
                self._wild.append((order, e))
            else:
                key = ".".join(reversed(e.labels_rev))
                table = self._suffix_sub if e.subdomains_only else self._suffix
                table.setdefault(key, (order, e))

    @classmethod
    def from_strings(cls, values: list[str]) -> ExcludeMatcher:
        """Parse every entry; ValueError names the first bad one with its index."""
        parsed = []
        for i, text in enumerate(values):
            try:
                parsed.append(parse_entry(text))
            except ValueError as exc:
                raise ValueError(f"entry {i} ({text!r}): {exc}") from None
        return cls(parsed)

    def __repr__(self) -> str:
        shown = [e.entry for e in self.entries]
        if self._everything is not None:
            shown.append(self._everything)
        return f"ExcludeMatcher({shown!r})"

    @property
    def has_ip_entries(self) -> bool:
        """True when some entry matches on the destination IP (so an unknown IP matters)."""
        return bool(self._ip)

    def __bool__(self) -> bool:
        return bool(self.entries) or self._everything is not None

    def match(self, hostname: str | None, ip: IPAddress | None) -> ExcludeMatch | None:
        """The first matching entry. IP entries are tried first: a match on the original IP
        needs no name verification, so it is the stronger reason for DIRECT."""
        if self._everything is not None:
            return ExcludeMatch(self._everything, "any", "*")
        if ip is not None and self._ip:
            value, version = ip.value, ip.version
            for _order, r in self._ip:
                if r.version == version and r.first <= value <= r.last:
                    return ExcludeMatch(r.entry, "ip", str(ip))
        if hostname is None:
            return None
        name = (hostname[:-1] if hostname.endswith(".") else hostname).lower()
        best = self._best_name_match(name)
        return ExcludeMatch(best.entry, "name", name) if best else None

    def _best_name_match(self, name: str) -> NamePattern | None:
        hits: list[tuple[int, NamePattern]] = []
        if self._suffix or self._suffix_sub:
            hit = self._suffix.get(name)
            if hit:
                hits.append(hit)
            start = name.find(".")
            while start >= 0:
                suffix = name[start + 1 :]
                for table in (self._suffix, self._suffix_sub):
                    hit = table.get(suffix)
                    if hit:
                        hits.append(hit)
                start = name.find(".", start + 1)
        if self._wild:
            labels_rev = name.split(".")[::-1]
            for order, pat in self._wild:
                if _wild_match(pat, labels_rev):
                    hits.append((order, pat))
        return min(hits, key=lambda h: h[0])[1] if hits else None


def _wild_match(pat: NamePattern, labels_rev: list[str]) -> bool:
    n = len(pat.labels_rev)
    if len(labels_rev) < n or (pat.subdomains_only and len(labels_rev) == n):
        return False
    return all(p == "*" or p == label for p, label in zip(pat.labels_rev, labels_rev, strict=False))
