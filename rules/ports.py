"""`transparentPorts`: which destination ports the policy applies to.

Docker Desktop documents a string: `"*"` or a comma list of ports. We add `a-b` ranges, and
`""` means no port at all. The same set drives the firewall generator (`ranges()`) and the
per-connection check (`port in ports`), so they cannot disagree.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

MIN_PORT = 1
MAX_PORT = 65535
DEFAULT_TRANSPARENT_PORTS = "80,443"

_NUMBER = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class PortSet:
    """A set of TCP ports kept as sorted, merged, inclusive ranges."""

    _ranges: tuple[tuple[int, int], ...]

    @classmethod
    def all(cls) -> PortSet:
        return cls(((MIN_PORT, MAX_PORT),))

    @classmethod
    def none(cls) -> PortSet:
        return cls(())

    @classmethod
    def from_ranges(cls, ranges: list[tuple[int, int]]) -> PortSet:
        """Sort and merge overlapping or adjacent ranges."""
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return cls(tuple((lo, hi) for lo, hi in merged))

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int) or isinstance(port, bool):
            return False
        i = bisect.bisect_right(self._ranges, (port, MAX_PORT + 1)) - 1
        return i >= 0 and self._ranges[i][0] <= port <= self._ranges[i][1]

    @property
    def is_all(self) -> bool:
        return self._ranges == ((MIN_PORT, MAX_PORT),)

    @property
    def is_empty(self) -> bool:
        return not self._ranges

    def ranges(self) -> list[tuple[int, int]]:
        """Merged inclusive (lo, hi) ranges, ascending: what the firewall rules need."""
        return list(self._ranges)

    def __str__(self) -> str:
        """The canonical `transparentPorts` spelling of this set."""
        if self.is_all:
            return "*"
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self._ranges)


def parse_transparent_ports(text: str) -> PortSet:
    """Parse `"*"`, `""` or a comma list of ports and `a-b` ranges.

    Raises ValueError naming the bad entry. Empty list entries (`"80,,443"`, a trailing
    comma) are refused rather than skipped: they usually hide a typo in a security setting.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string, got {type(text).__name__}")
    stripped = text.strip()
    if stripped == "":
        return PortSet.none()
    if stripped == "*":
        return PortSet.all()
    ranges: list[tuple[int, int]] = []
    for raw in stripped.split(","):
        entry = raw.strip()
        if entry == "":
            raise ValueError(f"empty entry in port list {text!r}")
        if entry == "*":
            raise ValueError("'*' must be the whole value, not part of a list")
        lo_text, dash, hi_text = entry.partition("-")
        lo = _port(lo_text.strip(), entry)
        hi = _port(hi_text.strip(), entry) if dash else lo
        if lo > hi:
            raise ValueError(f"range {entry!r} is reversed (start > end)")
        ranges.append((lo, hi))
    return PortSet.from_ranges(ranges)


def _port(text: str, entry: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{entry!r} is not a port number or a range a-b")
    port = int(text)
    if not MIN_PORT <= port <= MAX_PORT:
        raise ValueError(f"port {port} in {entry!r} out of range ({MIN_PORT}-{MAX_PORT})")
    return port
