"""Network morphisms. Exact (NASH): make a network deeper, wider, or add a skip connection.
Approximate (LEMONADE): remove a layer or a skip connection, prune filters, or make a conv
depthwise-separable.

Every morphism is a pure function of (arch, state_dict, rng, probe); an exact one's child
computes what its parent computed, an approximate one's child approximately so
(`output_change` measures how far). The parent's arch and tensors are never modified.
NASH samples from `REGISTRY` only; `APPROXIMATE` is sampled only when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import MorphismError
from ..spec import Arch
from . import deeper as _deeper_mod
from . import prune as _prune_mod
from . import remove_layer as _remove_layer_mod
from . import remove_skip as _remove_skip_mod
from . import separable as _separable_mod
from . import skip as _skip_mod
from . import wider as _wider_mod
from .base import Morphism, StateDict
from .deeper import deeper
from .measure import output_change
from .prune import prune
from .remove_layer import remove_layer
from .remove_skip import remove_skip
from .separable import separable
from .skip import skip
from .wider import wider

# The exact morphisms, what NASH samples from. Their order and contents fix the random draws
# of apply_random_morphisms (old runs resume bit for bit): add approximate operators to
# APPROXIMATE, never here.
REGISTRY: dict[str, Morphism] = {
    "deeper": _deeper_mod.MORPHISM,
    "wider": _wider_mod.MORPHISM,
    "skip": _skip_mod.MORPHISM,
}

# Approximate network morphisms (LEMONADE, Elsken et al. 2019): sampled only when asked for.
APPROXIMATE: dict[str, Morphism] = {
    "remove_layer": _remove_layer_mod.MORPHISM,
    "remove_skip": _remove_skip_mod.MORPHISM,
    "prune": _prune_mod.MORPHISM,
    "separable": _separable_mod.MORPHISM,
}
ALL: dict[str, Morphism] = {**REGISTRY, **APPROXIMATE}


def _rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def apply_morphism(arch: Arch, state_dict: Mapping[str, torch.Tensor], record: Mapping,
                   rng: np.random.Generator, probe: torch.Tensor | None = None
                   ) -> tuple[Arch, StateDict]:
    """Apply one explicit record (e.g. {"op": "wider", "conv": "conv2", "factor": 2}), of an
    exact or an approximate morphism."""
    if not isinstance(record, Mapping) or record.get("op") not in ALL:
        op = record.get("op") if isinstance(record, Mapping) else record
        raise MorphismError(f"unknown morphism {op!r}; known ops are {', '.join(REGISTRY)} "
                            f"(exact) and {', '.join(APPROXIMATE)} (approximate)")
    new_arch, new_sd, _ = ALL[record["op"]].apply(arch, state_dict, record, _rng(rng), probe)
    return new_arch, new_sd


def apply_random_morphisms(arch: Arch, state_dict: Mapping[str, torch.Tensor], n: int,
                           rng: np.random.Generator, probe: torch.Tensor | None = None,
                           *, approximate: bool = False
                           ) -> tuple[Arch, StateDict, list[dict[str, Any]]]:
    """Apply `n` random morphisms; each picks an operator uniformly among those that fit.

    The operators are the exact ones (`REGISTRY`, what NASH uses); with `approximate=True`
    also those of `APPROXIMATE` (after the exact ones; their records get "change" when a
    probe is given). Returns the child's arch and state dict and the applied records
    (JSON-ready dicts that `apply_morphism` replays).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise MorphismError(f"the number of morphisms must be a non-negative integer, got {n!r}")
    rng = _rng(rng)
    pool = list(ALL.values()) if approximate else list(REGISTRY.values())
    sd: StateDict = dict(state_dict)
    applied: list[dict[str, Any]] = []
    for _ in range(int(n)):
        options = [(m, c) for m in pool if (c := m.choices(arch))]
        if not options:
            raise MorphismError(f"no morphism can be applied to this architecture: {arch!r}")
        m, choices = options[int(rng.integers(len(options)))]
        record = m.sample(arch, rng, choices)
        arch, sd, full = m.apply(arch, sd, record, rng, probe)
        applied.append(full)
    return arch, sd, applied


__all__ = ["ALL", "APPROXIMATE", "REGISTRY", "Morphism", "MorphismError", "apply_morphism",
           "apply_random_morphisms", "deeper", "output_change", "prune", "remove_layer",
           "remove_skip", "separable", "skip", "wider"]
