"""A mutation fuzzer for the parsers that read hostile bytes: fast enough for 10^6 inputs.

Hypothesis proves each parser's properties on a few hundred structured examples per test
run; this goes wide instead: seeds from each parser's own tests, mutated at random, at tens
of thousands of inputs a second, with the same invariants (`tests.fuzz.targets`). Run it as

    python -m tests.fuzz --list
    python -m tests.fuzz --parser config --inputs 1000000
    python -m tests.fuzz --seconds 20            # every parser, 20 s each (what CI runs)

A target is a name, a list of seed inputs and a check that raises AssertionError (or lets
any other exception escape) when an input breaks an invariant. Adding a parser is one call:

    register("dns-message", seeds=dns_seeds, check=check_dns_message)

in `tests/fuzz/targets.py` (or in a module it imports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Target:
    """One parser under fuzz: `check(data)` returns a short label of the outcome (counted
    in the report, to show the inputs reach more than one path) or raises on a violation."""

    name: str
    seeds: Callable[[], list[bytes]]
    check: Callable[[bytes], str]
    #: Byte strings the mutator splices in (keywords, delimiters of the format).
    tokens: tuple[bytes, ...] = field(default=())


TARGETS: dict[str, Target] = {}


def register(
    name: str,
    seeds: Callable[[], list[bytes]],
    check: Callable[[bytes], str],
    tokens: tuple[bytes, ...] = (),
) -> None:
    """Add a parser to the fuzzer (a name may be registered once)."""
    if name in TARGETS:
        raise ValueError(f"fuzz target {name!r} registered twice")
    TARGETS[name] = Target(name, seeds, check, tokens)
