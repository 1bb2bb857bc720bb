"""Time random network morphisms on grown NASH networks (CPU; run: python benchmarks/morphisms.py).

Compares: applying 5 random morphisms without a probe, the same with a probe batch (deeper then
runs the network up to the insertion point), and enumerating the valid positions of each
operator. Each row is the median (and max) over repeats, each repeat with its own rng seed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from morphclimb import build, starting_arch, weights_of
from morphclimb.morphisms import REGISTRY, apply_random_morphisms


def grow(min_nodes: int, seed: int, max_params: int):
    """The starting network grown by random morphisms until it has `min_nodes` nodes."""
    arch = starting_arch(image_size=32)
    sd = weights_of(build(arch, seed=seed))
    rng = np.random.default_rng(seed)
    for _ in range(10 * min_nodes):
        if len(arch) >= min_nodes:
            return arch, sd
        a, s, _ = apply_random_morphisms(arch, sd, 1, rng)
        if a.num_params <= max_params:  # keep the benchmark network a realistic size
            arch, sd = a, s
    raise RuntimeError(f"could not grow a {min_nodes}-node network under {max_params} params")


def timed(fn, repeats: int) -> tuple[float, float, str]:
    """Median and max wall time of fn(seed) in ms over `repeats` seeds, and the median child size."""
    times, sizes = [], []
    for seed in range(repeats):
        t0 = time.perf_counter()
        result = fn(seed)
        times.append((time.perf_counter() - t0) * 1e3)
        if isinstance(result, tuple):
            sizes.append(result[0].num_params)
    size = f"{statistics.median(sizes) / 1e6:.1f}M" if sizes else "-"
    return statistics.median(times), max(times), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--probe-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    rows = []
    for nodes in (30, 60):
        arch, sd = grow(nodes, seed=0, max_params=3_000_000)
        probe = torch.randn(args.probe_batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        label = f"{len(arch)} nodes/{arch.count('conv')} conv/{arch.num_params / 1e6:.2f}M"
        rows.append((label, "5 random morphisms, no probe", *timed(
            lambda s, a=arch, w=sd: apply_random_morphisms(a, w, 5, np.random.default_rng(s)),
            args.repeats)))
        rows.append((label, f"5 random morphisms, probe {args.probe_batch}x3x32x32", *timed(
            lambda s, a=arch, w=sd, p=probe: apply_random_morphisms(
                a, w, 5, np.random.default_rng(s), p), args.repeats)))
        for name, m in REGISTRY.items():
            rows.append((label, f"{name}.choices (valid positions)",
                         *timed(lambda s, a=arch, m=m: m.choices(a), args.repeats)))
    widths = [max(len(str(r[c])) for r in rows) for c in range(2)]
    print(f"{'network':<{widths[0]}}  {'what':<{widths[1]}}  median ms    max ms  child params")
    for net, what, med, mx, size in rows:
        print(f"{net:<{widths[0]}}  {what:<{widths[1]}}  {med:9.2f}  {mx:8.2f}  {size:>12}")
    print("network = starting net (32x32 input, widths 32-64-128) grown by random morphisms "
          "to >= 30 / >= 60 nodes (seed 0, params capped at 3M); each repeat uses its own rng seed.\n"
          "child params: median size of the child; the time is mostly writing its new weights.")


if __name__ == "__main__":
    main()
