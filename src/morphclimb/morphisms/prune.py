"""Prune filters (approximate): keep the half or quarter of a conv's filters with largest L1 norm."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..build import key
from ..errors import MorphismError
from ..spec import Arch, with_node
from ._graph import Keep, LayoutConflict, components, narrow, narrow_propagate
from .base import Choices, Morphism, StateDict, need_int, need_node
from .wider import _tied

FACTORS = (2, 4)  # keep 1/2 or 1/4 of the filters


def plan(arch: Arch, conv: str, comps: dict[str, str] | None = None) -> list[str]:
    """The convs pruned together with `conv` (tied to it by adds), or MorphismError saying why
    its filters cannot be pruned."""
    tied = _tied(arch, conv, comps)
    other = [p for p in tied if arch[p].op != "conv"]
    if other:
        raise MorphismError(
            f"prune: conv '{conv}' cannot be pruned: its channels are tied through an add to "
            f"'{other[0]}', a {arch[other[0]].op} node, whose channels cannot be pruned")
    c = arch.channels(conv)
    try:
        narrow_propagate(arch, {p: tuple(range(c - 1)) for p in tied})
    except LayoutConflict as e:
        raise MorphismError(
            f"prune: conv '{conv}' cannot be pruned: the removed channels would reach add "
            f"'{e.node_id}' (through a concat) on one side only") from None
    return tied


def kept(sd: Mapping[str, torch.Tensor], convs: list[str], n: int) -> Keep:
    """The `n` channels whose filters have the largest L1 norm, summed over the tied convs
    (ties: the lower index), in ascending order."""
    score = sum(sd[key(c, "weight")].detach().abs().double().flatten(1).sum(1).cpu()
                for c in convs)
    order = sorted(range(len(score)), key=lambda i: (-float(score[i]), i))
    return tuple(sorted(order[:n]))


def choices(arch: Arch) -> Choices:
    """Every conv whose filters can be pruned, each with the factors that leave a filter."""
    comps = components(arch)
    valid: dict[str, bool] = {}
    out = []
    for n in arch.nodes:
        if n.op != "conv":
            continue
        if comps[n.id] not in valid:
            try:
                plan(arch, n.id, comps)
                valid[comps[n.id]] = True
            except MorphismError:
                valid[comps[n.id]] = False
        factors = [f for f in FACTORS if n.channels // f >= 1]
        if valid[comps[n.id]] and factors:
            out.append((n.id, factors))
    return out


def record(conv: str, factor: int) -> dict[str, Any]:
    """The record for keeping 1/`factor` of the filters of `conv` (and its tied convs)."""
    return {"op": "prune", "conv": conv, "factor": factor}


def apply_record(arch: Arch, sd: Mapping[str, torch.Tensor], rec: dict[str, Any],
                 rng: np.random.Generator, probe: torch.Tensor | None = None
                 ) -> tuple[Arch, StateDict, dict[str, Any]]:
    """Keep channels // factor filters of every tied conv; readers keep the matching inputs."""
    need_node(arch, "prune", rec["conv"], "'conv'", ("conv",))
    c = arch[rec["conv"]].channels
    f = need_int("prune", "factor", rec["factor"], lambda v: v >= 2 and c // v >= 1,
                 f"an integer of at least 2 that leaves a filter of {c} (2 or 4 in the search)")
    convs = plan(arch, rec["conv"])
    keep = kept(sd, convs, c // f)
    narrowed = set(convs)
    new_arch = arch.replace([with_node(n, channels=len(keep)) if n.id in narrowed else n
                             for n in arch.nodes])
    try:
        lay = narrow_propagate(arch, {p: keep for p in convs})
    except LayoutConflict as e:
        raise MorphismError(f"prune: the removed channels of '{rec['conv']}' would reach add "
                            f"'{e.node_id}' on one side only") from None
    out = narrow(arch, new_arch, sd, lay)
    return new_arch, out, {**record(rec["conv"], f), "convs": convs, "kept": list(keep)}


MORPHISM = Morphism("prune", choices, record, apply_record, fields=("conv", "factor"),
                    outputs=("convs", "kept", "change"), approximate=True)


def prune(arch: Arch, state_dict: Mapping[str, torch.Tensor], rng: np.random.Generator,
          probe: torch.Tensor | None = None, *, conv: str | None = None,
          factor: int | None = None) -> tuple[Arch, StateDict]:
    """Keep 1/factor of a conv's filters, those of largest L1 norm (sampled unless given)."""
    return MORPHISM.run(arch, state_dict, rng, probe, {"conv": conv, "factor": factor})
