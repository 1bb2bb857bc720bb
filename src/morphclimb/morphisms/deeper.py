"""Deeper (Type I + III): insert an identity Conv-BN-ReLU block after a ReLU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..build import BN_EPS, key
from ..errors import MorphismError
from ..spec import Arch, Node
from ._graph import activation, dtype_device, new_ids, rewire
from .base import Choices, Morphism, StateDict, need_int, need_node

KERNELS = (3, 5)


def choices(arch: Arch) -> Choices:
    """Every ReLU of a feature map, each with kernel 3 or 5."""
    return [(n.id, list(KERNELS)) for n in arch.nodes
            if n.op == "relu" and len(arch.shapes[n.id]) == 3]


def record(after: str, kernel: int) -> dict[str, Any]:
    """The record for a block after ReLU `after` with a `kernel`x`kernel` conv."""
    return {"op": "deeper", "after": after, "kernel": kernel}


def _stats(arch: Arch, sd: Mapping[str, torch.Tensor], after: str,
           probe: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of `after` on the probe (train mode), else 0 and 1."""
    dtype, device = dtype_device(sd)
    c = arch.channels(after)
    if probe is None:
        return (torch.zeros(c, dtype=dtype, device=device),
                torch.ones(c, dtype=dtype, device=device))
    a = activation(arch, sd, probe, after)
    return a.mean(dim=(0, 2, 3)), a.var(dim=(0, 2, 3), unbiased=False)


def apply_record(arch: Arch, sd: Mapping[str, torch.Tensor], rec: dict[str, Any],
                 rng: np.random.Generator, probe: torch.Tensor | None = None
                 ) -> tuple[Arch, StateDict, dict[str, Any]]:
    """Insert the block; the conv is the identity and the BN undoes its own normalisation."""
    need_node(arch, "deeper", rec["after"], "'after'", ("relu",))
    after = rec["after"]
    if len(arch.shapes[after]) != 3:
        raise MorphismError(f"deeper: relu '{after}' acts on a vector {arch.shapes[after]}, "
                            "not a feature map, so no conv can follow it")
    k = need_int("deeper", "kernel", rec["kernel"], lambda v: v >= 1 and v % 2 == 1,
                 "an odd positive integer (3 or 5 in the search)")
    conv_id, bn_id, relu_id = new_ids(arch, ("conv", "bn", "relu"))
    c = arch.channels(after)
    block = [Node(conv_id, "conv", (after,), channels=c, kernel=k),
             Node(bn_id, "bn", (conv_id,)), Node(relu_id, "relu", (bn_id,))]
    new_arch = arch.replace(rewire(arch, after, relu_id, block, after))

    dtype, device = dtype_device(sd)
    mean, var = _stats(arch, sd, after, probe)
    w = torch.zeros((c, c, k, k), dtype=dtype, device=device)
    ch = torch.arange(c, device=device)
    w[ch, ch, k // 2, k // 2] = 1.0
    out = dict(sd)
    out[key(conv_id, "weight")] = w
    out[key(bn_id, "weight")] = torch.sqrt(var + BN_EPS)
    out[key(bn_id, "bias")] = mean.clone()
    out[key(bn_id, "running_mean")] = mean.clone()
    out[key(bn_id, "running_var")] = var.clone()
    out[key(bn_id, "num_batches_tracked")] = torch.tensor(0, dtype=torch.long, device=device)
    return new_arch, out, {**record(after, k), "new": [conv_id, bn_id, relu_id]}


MORPHISM = Morphism("deeper", choices, record, apply_record, fields=("after", "kernel"),
                    outputs=("new",))


def deeper(arch: Arch, state_dict: Mapping[str, torch.Tensor], rng: np.random.Generator,
           probe: torch.Tensor | None = None, *, after: str | None = None,
           kernel: int | None = None) -> tuple[Arch, StateDict]:
    """Insert an exact Conv-BN-ReLU block after a ReLU (position/kernel sampled unless given)."""
    return MORPHISM.run(arch, state_dict, rng, probe, {"after": after, "kernel": kernel})
