"""Remove a layer (approximate): take out a Conv-BN-ReLU block and reconnect around it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import MorphismError
from ..spec import Arch
from ._graph import rewire, weights_for
from .base import Choices, Morphism, StateDict, need_node


def block(arch: Arch, conv: str) -> list[str]:
    """The nodes removed with `conv`: [dwconv,] conv, bn, relu; or MorphismError saying why the
    conv is not a removable layer."""
    c = arch[conv]
    readers = arch.consumers[conv]
    bn = readers[0] if len(readers) == 1 and arch[readers[0]].op == "bn" else None
    relu = None
    if bn is not None and len(arch.consumers[bn]) == 1 and arch[arch.consumers[bn][0]].op == "relu":
        relu = arch.consumers[bn][0]
    if relu is None:
        raise MorphismError(f"remove_layer: conv '{conv}' does not start a Conv-BN-ReLU block "
                            "(its only reader a bn, whose only reader a relu)")
    nodes = [conv, bn, relu]
    src = c.inputs[0]
    if arch[src].op == "dwconv" and arch.consumers[src] == (conv,):  # a separable conv
        nodes.insert(0, src)
        src = arch[src].inputs[0]
    if arch.channels(src) != arch.channels(conv):
        raise MorphismError(
            f"remove_layer: conv '{conv}' maps {arch.channels(src)} channels to "
            f"{arch.channels(conv)}; only a layer with as many channels out as in can be removed "
            "(its readers would get the wrong number of channels)")
    return nodes


def choices(arch: Arch) -> Choices:
    """Every conv that starts a removable Conv-BN-ReLU block (one option each)."""
    out = []
    for n in arch.nodes:
        if n.op == "conv":
            try:
                block(arch, n.id)
            except MorphismError:
                continue
            out.append((n.id, [None]))
    return out


def record(conv: str, _: Any = None) -> dict[str, Any]:
    """The record for removing the block that starts at `conv`."""
    return {"op": "remove_layer", "conv": conv}


def apply_record(arch: Arch, sd: Mapping[str, torch.Tensor], rec: dict[str, Any],
                 rng: np.random.Generator, probe: torch.Tensor | None = None
                 ) -> tuple[Arch, StateDict, dict[str, Any]]:
    """Every reader of the block's relu reads the block's input instead; the block is gone."""
    need_node(arch, "remove_layer", rec["conv"], "'conv'", ("conv",))
    nodes = block(arch, rec["conv"])
    src = arch[nodes[0]].inputs[0]
    gone = set(nodes)
    kept = [n for n in rewire(arch, nodes[-1], src, [], src) if n.id not in gone]
    new_arch = arch.replace(kept)
    return new_arch, weights_for(new_arch, sd), {**record(rec["conv"]), "removed": nodes}


MORPHISM = Morphism("remove_layer", choices, record, apply_record, fields=("conv",),
                    outputs=("removed", "change"), approximate=True)


def remove_layer(arch: Arch, state_dict: Mapping[str, torch.Tensor], rng: np.random.Generator,
                 probe: torch.Tensor | None = None, *, conv: str | None = None
                 ) -> tuple[Arch, StateDict]:
    """Remove a Conv-BN-ReLU block with as many channels out as in (sampled unless given)."""
    return MORPHISM.run(arch, state_dict, rng, probe, {"conv": conv})
