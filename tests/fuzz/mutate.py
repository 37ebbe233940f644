"""Byte-level mutations of seed inputs (the classic AFL-style set, without coverage).

Deterministic for a given seed, so a failure the report prints can be replayed with
`--seed`; every output is bounded in size.
"""

from __future__ import annotations

import random

MAX_INPUT = 1 << 16
_INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF)
_INTERESTING_16 = (0, 1, 0x00FF, 0x0100, 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xFFFF)


class Mutator:
    """Produces inputs: a seed with 1-8 stacked mutations, now and then pure random bytes."""

    def __init__(self, seeds: list[bytes], tokens: tuple[bytes, ...], rng: random.Random):
        self.seeds = [s[:MAX_INPUT] for s in seeds] or [b""]
        self.tokens = tokens or (b"\x00", b"\xff")
        self.rng = rng

    def next(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.02:
            return rng.randbytes(rng.randrange(0, 512))
        data = bytearray(rng.choice(self.seeds))
        for _ in range(rng.randrange(1, 9)):
            self._mutate(data)
        del data[MAX_INPUT:]
        return bytes(data)

    def _mutate(self, data: bytearray) -> None:
        rng = self.rng
        n = len(data)
        op = rng.randrange(10)
        if n == 0 or op == 0:  # insert random bytes
            at = rng.randrange(n + 1)
            data[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif op == 1:  # flip a bit
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 2:  # an interesting byte
            data[rng.randrange(n)] = rng.choice(_INTERESTING_8)
        elif op == 3 and n >= 2:  # an interesting 16-bit value (lengths are big-endian u16)
            at = rng.randrange(n - 1)
            data[at : at + 2] = rng.choice(_INTERESTING_16).to_bytes(2, "big")
        elif op == 4:  # delete a range
            at = rng.randrange(n)
            del data[at : at + rng.randrange(1, 17)]
        elif op == 5:  # duplicate a range
            at = rng.randrange(n)
            piece = data[at : at + rng.randrange(1, 33)]
            data[at:at] = piece * rng.randrange(1, 4)
        elif op == 6:  # truncate
            del data[rng.randrange(n) :]
        elif op == 7:  # splice in a token
            at = rng.randrange(n + 1)
            data[at:at] = rng.choice(self.tokens)
        elif op == 8:  # overwrite with a token
            at = rng.randrange(n)
            token = rng.choice(self.tokens)
            data[at : at + len(token)] = token
        else:  # splice with another seed
            other = rng.choice(self.seeds)
            if other:
                cut = rng.randrange(len(other))
                data[rng.randrange(n) :] = other[cut:]
