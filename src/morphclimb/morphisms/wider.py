"""Wider (Type II): multiply the channels of a conv (and every conv tied to it) by 2 or 4."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import MorphismError
from ..spec import Arch, with_node
from ._graph import Layout, LayoutConflict, components, propagate, relayout
from .base import Choices, Morphism, StateDict, need_int, need_node

FACTORS = (2, 4)


def _tied(arch: Arch, conv: str, comps: dict[str, str] | None = None) -> list[str]:
    """The producers (conv/concat/input nodes) whose channels are tied to those of `conv`."""
    comps = components(arch) if comps is None else comps
    root = comps[conv]
    return [n.id for n in arch.nodes if comps[n.id] == root and n.op in ("conv", "concat", "input")]


def _seeds(arch: Arch, convs: list[str], factor: int) -> dict[str, Layout]:
    c = arch.channels(convs[0])
    return {p: (c * factor, tuple(range(c))) for p in convs}


def plan(arch: Arch, conv: str, factor: int, comps: dict[str, str] | None = None) -> list[str]:
    """The convs widened together with `conv`, or MorphismError saying why it cannot be widened."""
    tied = _tied(arch, conv, comps)
    other = [p for p in tied if arch[p].op != "conv"]
    if other:
        raise MorphismError(
            f"wider: conv '{conv}' cannot be widened: its channels are tied through an add to "
            f"'{other[0]}', a {arch[other[0]].op} node, which cannot grow new channels")
    try:
        propagate(arch, _seeds(arch, tied, factor))
    except LayoutConflict as e:
        raise MorphismError(
            f"wider: conv '{conv}' cannot be widened: the new channels would reach add "
            f"'{e.node_id}' (through a concat) on one side only, so its inputs would no longer "
            "match") from None
    return tied


def choices(arch: Arch) -> Choices:
    """Every conv that can be widened, each with the factors (2, 4) that are valid for it."""
    comps = components(arch)
    valid: dict[tuple[str, int], bool] = {}
    out = []
    for n in arch.nodes:
        if n.op != "conv":
            continue
        factors = []
        for f in FACTORS:
            if (comps[n.id], f) not in valid:
                try:
                    plan(arch, n.id, f, comps)
                    valid[comps[n.id], f] = True
                except MorphismError:
                    valid[comps[n.id], f] = False
            if valid[comps[n.id], f]:
                factors.append(f)
        if factors:
            out.append((n.id, factors))
    return out


def record(conv: str, factor: int) -> dict[str, Any]:
    """The record for widening `conv` by `factor`."""
    return {"op": "wider", "conv": conv, "factor": factor}


def apply_record(arch: Arch, sd: Mapping[str, torch.Tensor], rec: dict[str, Any],
                 rng: np.random.Generator, probe: torch.Tensor | None = None
                 ) -> tuple[Arch, StateDict, dict[str, Any]]:
    """Widen every tied conv: old filters kept, new ones He-normal, readers get zero weights."""
    need_node(arch, "wider", rec["conv"], "'conv'", ("conv",))
    f = need_int("wider", "factor", rec["factor"], lambda v: v >= 2,
                 "an integer of at least 2 (2 or 4 in the search)")
    convs = plan(arch, rec["conv"], f)
    seeds = _seeds(arch, convs, f)
    wide = set(convs)
    new_arch = arch.replace([with_node(n, channels=n.channels * f) if n.id in wide else n
                             for n in arch.nodes])
    out = relayout(new_arch, sd, propagate(new_arch, seeds), rng)
    return new_arch, out, {**record(rec["conv"], f), "convs": convs}


MORPHISM = Morphism("wider", choices, record, apply_record, fields=("conv", "factor"),
                    outputs=("convs",))


def wider(arch: Arch, state_dict: Mapping[str, torch.Tensor], rng: np.random.Generator,
          probe: torch.Tensor | None = None, *, conv: str | None = None,
          factor: int | None = None) -> tuple[Arch, StateDict]:
    """Widen a conv and its tied convs exactly (conv/factor sampled unless given)."""
    return MORPHISM.run(arch, state_dict, rng, probe, {"conv": conv, "factor": factor})
