"""Limits of a search: size limits for children, and predicting training time for a time budget.

Training time is predicted from the epochs the run has measured so far: seconds per image and
epoch = a + b * MFLOPs (least squares over the models trained so far, so small networks whose
time is mostly overhead and large ones whose time is mostly arithmetic are both covered),
times a safety margin. Evaluations count as a third of a training epoch on their images.
"""

from __future__ import annotations

import math

import numpy as np

from .flops import forward_flops
from .spec import Arch

MARGIN = 1.15        # predictions are padded by this factor
EVAL_SHARE = 1 / 3   # an evaluation pass costs about a third of a training pass per image


def mflops(arch: Arch) -> float:
    """Forward MFLOPs per image."""
    return forward_flops(arch) / 1e6


def size_problem(arch: Arch, max_params: int | None, max_mflops: float | None,
                 min_params: int | None = None, min_mflops: float | None = None) -> str | None:
    """Why `arch` breaks the size limits (None when it does not): above a maximum, or below
    a minimum (a floor for children: a Pareto search's shrinking morphisms stay above it)."""
    if max_params is not None and arch.num_params > max_params:
        return f"{arch.num_params:,} parameters > max_params {max_params:,}"
    if max_mflops is not None and mflops(arch) > max_mflops:
        return f"{mflops(arch):.2f} MFLOPs > max_mflops {max_mflops:g}"
    if min_params is not None and arch.num_params < min_params:
        return f"{arch.num_params:,} parameters < min_params {min_params:,}"
    if min_mflops is not None and mflops(arch) < min_mflops:
        return f"{mflops(arch):.2f} MFLOPs < min_mflops {min_mflops:g}"
    return None


def image_passes(epochs: int, n_train: int, n_eval: int) -> float:
    """Training-pass equivalents of `epochs` epochs on n_train images plus one evaluation."""
    return epochs * n_train + EVAL_SHARE * n_eval


class TimeModel:
    """Seconds per training-pass image as a + b * MFLOPs, fitted to measured trainings."""

    def __init__(self, samples: list[tuple[float, float, float]]):
        """`samples`: (MFLOPs, image passes, seconds) of trainings measured in this run."""
        pts = [(m, s / n) for m, n, s in samples if n > 0 and s > 0]
        self.n = len(pts)
        if not pts:
            self.a, self.b = 0.0, 0.0
            return
        x = np.array([m for m, _ in pts])
        y = np.array([r for _, r in pts])
        if np.ptp(x) > 1e-9 * max(x.max(), 1.0) and len(pts) >= 2:
            b, a = np.polyfit(x, y, 1)
            if a < 0 or b < 0:   # keep it physical: proportional, or constant
                a, b = (0.0, float(np.median(y / np.maximum(x, 1e-9)))) if b > 0 else (
                    float(np.median(y)), 0.0)
        else:
            a, b = 0.0, float(np.median(y / np.maximum(x, 1e-9)))
        self.a, self.b = float(a), float(b)

    @property
    def ready(self) -> bool:
        """Whether anything has been measured."""
        return self.n > 0

    def seconds(self, arch_mflops: float, passes: float) -> float:
        """Predicted seconds (with the margin) for `passes` image passes through that size."""
        return MARGIN * passes * (self.a + self.b * arch_mflops)


def fits(left: float, costs: dict[str, float]) -> tuple[bool, str]:
    """Whether the predicted `costs` fit in `left` seconds, and a one-line account."""
    need = sum(costs.values())
    parts = ", ".join(f"{k} ~{v:.0f}s" for k, v in costs.items())
    return need <= left, f"needs ~{need:.0f}s ({parts}), {max(left, 0):.0f}s left"



def training_bytes(arch: Arch, batch_size: int) -> int:
    """A rough upper estimate of the memory training `arch` needs (float32).

    Weights, gradients and SGD momentum (3 copies of the parameters), plus every node's
    output for a batch kept for the backward pass and its gradient (2 copies), plus the
    uint8 batch itself. Meant to refuse a child that cannot fit, not to plan to the byte.
    """
    acts = sum(math.prod(arch.shapes[n.id]) for n in arch.nodes)
    return 4 * (3 * arch.num_params + 2 * batch_size * acts)


def available_bytes(device) -> int | None:
    """Memory a new training can use on `device` (None: unknown)."""
    import torch
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
