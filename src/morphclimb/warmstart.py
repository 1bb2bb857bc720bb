"""Preparing a warm-started network for its final training: shrink and perturb.

Ash & Adams ("On Warm-Starting Neural Network Training", NeurIPS 2020) found that a network
trained on, from weights that have already converged, generalises worse than one trained from
fresh weights, and that shrinking the weights towards zero and adding a little noise before
training on closes most of the gap. Here the noise is a fresh initialisation of the same
architecture (PyTorch's default, from a seed), so it has each layer's own scale:

    theta <- shrink * theta + perturb * theta_fresh

applied to every learnable parameter (convolutions, BatchNorm scales and shifts, the linear
layer, the learnable skip weights); BatchNorm running statistics are left as they are (training
re-estimates them). shrink = 1 and perturb = 0 leave the weights untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .build import build
from .spec import Arch


def shrink_perturb(arch: Arch, weights: Mapping[str, torch.Tensor], shrink: float,
                   perturb: float, seed: int) -> dict[str, torch.Tensor]:
    """`shrink * w + perturb * w_fresh` for every learnable parameter of `arch`.

    `w_fresh` is build(arch, seed=seed)'s initialisation; other state (BatchNorm running
    statistics and counters) is copied unchanged. Returns new tensors; `weights` is not changed.
    """
    if shrink == 1.0 and perturb == 0.0:
        return {k: v.clone() for k, v in weights.items()}
    fresh = build(arch, seed=seed)
    learnable = {k for k, _ in fresh.named_parameters()}
    fresh_state = fresh.state_dict()
    out = {}
    for k, v in weights.items():
        if k in learnable:
            f = fresh_state[k].to(v.dtype)
            out[k] = shrink * v + perturb * f
        else:
            out[k] = v.clone()
    return out
