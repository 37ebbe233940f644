"""`python -m tests.fuzz`: run the registered parsers' fuzzers, bounded in inputs and time.

Each parser runs until `--inputs` inputs or `--seconds` seconds, whichever comes first; the
report gives inputs, rate and the outcome counts. The first input that breaks an invariant
stops that parser: it is printed (and written under `--save`, replayable with `--replay`)
with its traceback, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
import traceback
from pathlib import Path

import tests.fuzz.targets  # noqa: F401  (registers the parsers)
from tests.fuzz import TARGETS, Target
from tests.fuzz.mutate import Mutator


def run(target: Target, inputs: int, seconds: float, seed: int, save: Path | None) -> bool:
    """Fuzz one target; True when no input broke an invariant."""
    mutator = Mutator(target.seeds(), target.tokens, random.Random(f"{seed}:{target.name}"))
    outcomes: collections.Counter[str] = collections.Counter()
    start = time.monotonic()
    deadline = start + seconds
    done = 0
    queue = list(mutator.seeds)  # the seeds themselves first
    while done < inputs:
        if done % 256 == 0 and time.monotonic() >= deadline:
            break
        data = queue.pop() if queue else mutator.next()
        try:
            outcomes[target.check(data)] += 1
        except Exception:
            report_failure(target, data, save)
            return False
        done += 1
    elapsed = time.monotonic() - start
    top = ", ".join(f"{k}: {v}" for k, v in outcomes.most_common(6))
    print(
        f"{target.name}: {done} inputs in {elapsed:.1f} s ({done / max(elapsed, 1e-9):,.0f}/s),"
        f" no failure; outcomes {top}",
        flush=True,
    )
    return True


def report_failure(target: Target, data: bytes, save: Path | None) -> None:
    print(f"{target.name}: FAILED on a {len(data)}-byte input: {data[:300]!r}", flush=True)
    traceback.print_exc()
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        path = save / f"{target.name}-{int(time.time())}.bin"
        path.write_bytes(data)
        print(f"{target.name}: input saved to {path} (replay: --replay {path})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument(
        "--parser",
        action="append",
        metavar="NAME",
        help="a registered parser (repeatable; default: all; --list names them)",
    )
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per parser")
    parser.add_argument("--seconds", type=float, default=600.0, help="time bound per parser")
    parser.add_argument("--seed", type=int, default=0, help="mutation seed (replays a run)")
    parser.add_argument("--save", type=Path, help="directory for an input that fails")
    parser.add_argument("--replay", type=Path, help="check one saved input and exit")
    parser.add_argument("--list", action="store_true", help="print the parsers and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(TARGETS))
        return 0
    names = args.parser or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown parser {unknown[0]!r} (known: {', '.join(TARGETS)})")
    if args.replay is not None:
        data = args.replay.read_bytes()
        for name in names:
            print(f"{name}: {TARGETS[name].check(data)}")
        return 0
    ok = True
    for name in names:
        ok = run(TARGETS[name], args.inputs, args.seconds, args.seed, args.save) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
