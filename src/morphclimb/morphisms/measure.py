"""How far a child is from its parent: the relative change of the logits on a probe batch."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..build import build
from ..spec import Arch
from ._graph import dtype_device


def logits(arch: Arch, state_dict: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The network's output on `x` in eval mode (BN with its running statistics), no grad."""
    dtype, device = dtype_device(state_dict)
    net = build(arch, state_dict, dtype=dtype, device=device).eval()
    with torch.no_grad():
        return net(x.to(dtype=dtype, device=device))


def output_change(parent_arch: Arch, parent_w: Mapping[str, torch.Tensor], child_arch: Arch,
                  child_w: Mapping[str, torch.Tensor], probe: torch.Tensor) -> float:
    """||f_child(x) - f_parent(x)|| / ||f_parent(x)|| over the probe batch x (Frobenius norms of
    the (N, classes) logits, both networks in eval mode, in the weights' dtype).

    0 for an exact morphism (up to rounding: ~1e-16 in float64, ~1e-7 in float32); 1 means the
    change is as large as the output itself. A parent whose logits are all zero gives 0 if the
    child's are too, else inf.
    """
    y = logits(parent_arch, parent_w, probe)
    d = float(torch.linalg.vector_norm(logits(child_arch, child_w, probe) - y))
    n = float(torch.linalg.vector_norm(y))
    if n == 0.0:
        return 0.0 if d == 0.0 else float("inf")
    return d / n
