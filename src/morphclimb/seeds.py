"""Seeds derived from the run seed and a path of keys, so every random choice can be redone."""

from __future__ import annotations

import hashlib

import numpy as np


def _key(k: int | str) -> int:
    if isinstance(k, int):
        return k
    b = k.encode()
    if len(b) <= 8:                 # the values every run before this version used
        return int.from_bytes(b, "little")
    # a longer key counts whole: a 256-bit digest, so ids sharing an 8-byte prefix differ
    return int.from_bytes(hashlib.sha256(b).digest(), "little")


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 31-bit seed derived from the run seed and a path of keys (step, child, purpose...)."""
    ints = [int(seed)] + [_key(k) for k in keys]
    return int(np.random.SeedSequence(ints).generate_state(1)[0] & 0x7FFFFFFF)
