"""Exact network morphisms (NASH): make a network deeper, wider, or add a skip connection.

Every morphism is a pure function of (arch, state_dict, rng, probe) whose child computes what
its parent computed; the parent's arch and tensors are never modified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import MorphismError
from ..spec import Arch
from . import deeper as _deeper_mod
from . import skip as _skip_mod
from . import wider as _wider_mod
from .base import Morphism, StateDict
from .deeper import deeper
from .skip import skip
from .wider import wider

REGISTRY: dict[str, Morphism] = {
    "deeper": _deeper_mod.MORPHISM,
    "wider": _wider_mod.MORPHISM,
    "skip": _skip_mod.MORPHISM,
}


def _rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def apply_morphism(arch: Arch, state_dict: Mapping[str, torch.Tensor], record: Mapping,
                   rng: np.random.Generator, probe: torch.Tensor | None = None
                   ) -> tuple[Arch, StateDict]:
    """Apply one explicit record (e.g. {"op": "wider", "conv": "conv2", "factor": 2})."""
    if not isinstance(record, Mapping) or record.get("op") not in REGISTRY:
        op = record.get("op") if isinstance(record, Mapping) else record
        raise MorphismError(f"unknown morphism {op!r}; known ops are {', '.join(REGISTRY)}")
    new_arch, new_sd, _ = REGISTRY[record["op"]].apply(arch, state_dict, record, _rng(rng), probe)
    return new_arch, new_sd


def apply_random_morphisms(arch: Arch, state_dict: Mapping[str, torch.Tensor], n: int,
                           rng: np.random.Generator, probe: torch.Tensor | None = None
                           ) -> tuple[Arch, StateDict, list[dict[str, Any]]]:
    """Apply `n` random morphisms; each picks an operator uniformly among those that fit.

    Returns the child's arch and state dict and the applied records (JSON-ready dicts that
    `apply_morphism` replays).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise MorphismError(f"the number of morphisms must be a non-negative integer, got {n!r}")
    rng = _rng(rng)
    sd: StateDict = dict(state_dict)
    applied: list[dict[str, Any]] = []
    for _ in range(int(n)):
        options = [(m, c) for m in REGISTRY.values() if (c := m.choices(arch))]
        if not options:
            raise MorphismError(f"no morphism can be applied to this architecture: {arch!r}")
        m, choices = options[int(rng.integers(len(options)))]
        record = m.sample(arch, rng, choices)
        arch, sd, full = m.apply(arch, sd, record, rng, probe)
        applied.append(full)
    return arch, sd, applied


__all__ = ["REGISTRY", "Morphism", "MorphismError", "apply_morphism", "apply_random_morphisms",
           "deeper", "skip", "wider"]
