"""Separable (approximate): replace a k x k conv by a depthwise k x k conv and a 1x1 conv."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..build import key
from ..errors import MorphismError
from ..spec import Arch, Node, with_node
from ._graph import new_ids
from .base import Choices, Morphism, StateDict, need_node


def factorise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(depthwise, pointwise) weights, (C_in, 1, k, k) and (C_out, C_in, 1, 1), whose product
    P[o, i] * D[i] is, for each input channel i, the best rank-1 approximation (least squares,
    Eckart-Young) of the (C_out, k*k) slice W[:, i]: with its SVD's top singular triple
    (s, u, v), D[i] = sqrt(s) v and P[:, i] = sqrt(s) u, the sign fixed so that the largest
    entry of D[i] in absolute value is positive. A slice that is zero (s <= 1e-12 of the
    largest s) gets the identity (centre one-hot) as D[i] and a zero column, so it stays exact
    and trainable. Computed in float64, returned in w's dtype."""
    c_out, c_in, k, _ = w.shape
    m = w.detach().double().permute(1, 0, 2, 3).reshape(c_in, c_out, k * k)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    s1, u1, v1 = s[:, 0], u[:, :, 0], vh[:, 0, :]  # (C_in,), (C_in, C_out), (C_in, k*k)
    big = v1.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(v1.gather(1, big))
    sign[sign == 0] = 1
    root = s1.sqrt()[:, None]
    d, p = v1 * sign * root, u1 * sign * root
    zero = s1 <= 1e-12 * float(s1.max())  # every slice when the whole kernel is zero
    d[zero] = 0.0
    d[zero, (k * k) // 2] = 1.0
    p[zero] = 0.0
    return (d.reshape(c_in, 1, k, k).to(w.dtype),
            p.t().reshape(c_out, c_in, 1, 1).contiguous().to(w.dtype))


def choices(arch: Arch) -> Choices:
    """Every conv with a kernel larger than 1x1 (one option each)."""
    return [(n.id, [None]) for n in arch.nodes if n.op == "conv" and n.kernel > 1]


def record(conv: str, _: Any = None) -> dict[str, Any]:
    """The record for making `conv` depthwise-separable."""
    return {"op": "separable", "conv": conv}


def apply_record(arch: Arch, sd: Mapping[str, torch.Tensor], rec: dict[str, Any],
                 rng: np.random.Generator, probe: torch.Tensor | None = None
                 ) -> tuple[Arch, StateDict, dict[str, Any]]:
    """A dwconv (new id) reads the conv's input; the conv keeps its id, becomes 1x1 and reads
    the dwconv; the weights are the per-channel rank-1 factorisation of the old kernel."""
    need_node(arch, "separable", rec["conv"], "'conv'", ("conv",))
    c = arch[rec["conv"]]
    if c.kernel <= 1:
        raise MorphismError(f"separable: conv '{c.id}' is 1x1 already; only a k x k conv with "
                            "k > 1 can be made depthwise-separable")
    (dw_id,) = new_ids(arch, ("dw",))
    dw = Node(dw_id, "dwconv", c.inputs, kernel=c.kernel)
    nodes = []
    for n in arch.nodes:
        if n.id == c.id:
            nodes += [dw, with_node(c, inputs=(dw_id,), kernel=1)]
        else:
            nodes.append(n)
    new_arch = arch.replace(nodes)
    d, p = factorise(sd[key(c.id, "weight")])
    out = dict(sd)
    out[key(dw_id, "weight")] = d
    out[key(c.id, "weight")] = p
    return new_arch, out, {**record(c.id), "new": [dw_id]}


MORPHISM = Morphism("separable", choices, record, apply_record, fields=("conv",),
                    outputs=("new", "change"), approximate=True)


def separable(arch: Arch, state_dict: Mapping[str, torch.Tensor], rng: np.random.Generator,
              probe: torch.Tensor | None = None, *, conv: str | None = None
              ) -> tuple[Arch, StateDict]:
    """Replace a k x k conv by depthwise k x k + pointwise 1x1 (conv sampled unless given)."""
    return MORPHISM.run(arch, state_dict, rng, probe, {"conv": conv})
