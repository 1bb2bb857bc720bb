"""The arithmetic of a Pareto front of (validation error, size), as LEMONADE uses it (Elsken,
Metzen & Hutter, ICLR 2019, arXiv 1804.09081): dominance, non-dominated sorting, the kernel
density of the cheap objective that parents and children are sampled inversely to, members
spread over the front, and the hypervolume that compares fronts. Every objective is minimised.
Nothing here trains, reads files or knows about runs (pareto.py applies it to a climb).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]

# bandwidth floor of the density, in natural-log units of the cheap objective (about 10% in
# size): with one member (model_0) or equal sizes Scott's rule gives zero width
MIN_BANDWIDTH = 0.1


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether `a` is no worse than `b` in every objective and better in at least one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def nondominated(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates, in their order (equal points all
    stay: neither dominates the other)."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def levels(points: Sequence[Point]) -> list[int]:
    """Non-dominated sorting: level 0 for the front, 1 for the front of the rest, ..."""
    out = [-1] * len(points)
    left = list(range(len(points)))
    level = 0
    while left:
        front = nondominated([points[i] for i in left])
        for k in front:
            out[left[k]] = level
        left = [i for k, i in enumerate(left) if k not in set(front)]
        level += 1
    return out


def density(members: Sequence[float], at: Sequence[float]) -> np.ndarray:
    """Gaussian kernel density of log(`members`) evaluated at log(`at`) (values > 0).

    The bandwidth is Scott's rule, 1.06 sd n^(-1/5), never below MIN_BANDWIDTH."""
    m = np.log(np.asarray(members, dtype=np.float64))
    x = np.log(np.asarray(at, dtype=np.float64))
    sd = float(m.std(ddof=1)) if len(m) > 1 else 0.0
    h = max(1.06 * sd * len(m) ** -0.2, MIN_BANDWIDTH)
    z = (x[:, None] - m[None, :]) / h
    return np.exp(-0.5 * z * z).sum(axis=1) / (len(m) * h * math.sqrt(2 * math.pi))


def inverse_density_weights(members: Sequence[float], at: Sequence[float]) -> np.ndarray:
    """Sampling probabilities of `at` proportional to 1 / density of the members there
    (LEMONADE's Eq. 1 and 2): where the front is sparse in size, more likely."""
    w = 1.0 / np.maximum(density(members, at), 1e-300)
    return w / w.sum()


def sample(rng: np.random.Generator, p: np.ndarray, k: int, replace: bool) -> list[int]:
    """k indices drawn with probabilities `p` (without replacement: each draw renormalised
    over those left, uniform once only zero weights are left; all of them when
    k >= len(p))."""
    if replace:
        return [int(i) for i in rng.choice(len(p), size=k, p=p)]
    left, out = list(range(len(p))), []
    while left and len(out) < k:
        q = np.asarray([p[i] for i in left], dtype=np.float64)
        q = q if q.sum() > 0 else np.ones(len(left))
        pick = int(rng.choice(len(left), p=q / q.sum()))
        out.append(left.pop(pick))
    return out


def spread(sizes: Sequence[float], k: int) -> list[int]:
    """Indices of k members spread evenly over log size (the smallest and the largest always
    among them); all of them, smallest first, when k <= 0 or k >= len(sizes)."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    if k <= 0 or k >= len(order):
        return order
    logs = [math.log(sizes[i]) for i in order]
    picked: list[int] = []
    for target in np.linspace(logs[0], logs[-1], k):
        free = [n for n in range(len(order)) if order[n] not in picked]
        n = min(free, key=lambda n: (abs(logs[n] - target), n))
        picked.append(order[n])
    return sorted(picked, key=lambda i: (sizes[i], i))


def hypervolume(points: Sequence[Point], ref: Point) -> float:
    """Area dominated by `points` (both objectives minimised) and bounded by `ref`; points
    not better than `ref` in both objectives add nothing."""
    pts = sorted({(float(a), float(b)) for a, b in points if a < ref[0] and b < ref[1]})
    area, ceiling = 0.0, ref[1]
    for a, b in pts:                       # by the first objective, ascending
        if b < ceiling:
            area += (ref[0] - a) * (ceiling - b)
            ceiling = b
    return area
