"""Wall time of one search step (its children trained at once) with 1 worker vs several.

    .venv/bin/python benchmarks/parallel.py [--children 4] [--epochs 1] [--images 2000]
                                            [--repeats 3]                   # CPU (default)
    python benchmarks/parallel.py --gpu [--children 8] [--epochs 2] [--repeats 3]

A step is built as the search builds it: `--children` children of the starting network, each
made by `--n-nm` random morphisms, trained `--epochs` epochs on the bundled mini CIFAR-10
(first `--images` training images) and evaluated on its validation part.

CPU: the same total threads (all usable cores) spent two ways: the serial executor (one
process, every core as torch intra-op threads) against the local executor with one worker per
core (each worker 1 thread), plus 1 worker x all threads (the cost of the process hop alone).
GPU (--gpu): one child at a time (serial; local executor with 1 worker per GPU) against the
local executor with 2 and 4 workers per GPU (children share each GPU).

Times are medians over --repeats runs of the whole step after a warm-up; worker start-up
(spawn, import torch, attach the data) is timed apart, as a search pays it once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

import numpy as np
import torch

from morphclimb import build, starting_arch, weights_of
from morphclimb.data import load_dataset
from morphclimb.device import auto_settings, cpu_count
from morphclimb.executors import SerialExecutor
from morphclimb.morphisms import apply_random_morphisms
from morphclimb.parallel import LocalExecutor
from morphclimb.train import TrainConfig
from morphclimb.worker import TrainTask, derive_seed


def make_split(images: int | None):
    """The bundled mini CIFAR-10 split, its training part cut to `images` images."""
    split = load_dataset("mini-cifar10").split(seed=0)
    if images:
        split = dataclasses.replace(split, train=split.train.subset(slice(0, images)))
    return split


def make_step(split, children: int, epochs: int, widths, n_nm: int, threads) -> list[TrainTask]:
    """A step's children: the starting net grown by n_nm random morphisms each."""
    arch = starting_arch(split.channels, split.num_classes, split.image_size[0], widths=widths)
    weights = weights_of(build(arch, seed=0))
    config = TrainConfig(threads=threads)
    tasks = []
    for j in range(1, children + 1):
        rng = np.random.default_rng(derive_seed(0, "morph", 1, j))
        child, w, _ = apply_random_morphisms(arch, weights, n_nm, rng)
        tasks.append(TrainTask(f"c{j}", child.to_dict(), w, epochs, config,
                               derive_seed(0, "train", j)))
    return tasks


def time_step(make_executor, tasks, repeats: int) -> dict:
    """Start-up time and per-step wall times of one executor configuration."""
    t0 = time.perf_counter()
    with make_executor() as ex:
        startup = time.perf_counter() - t0
        ex.run([dataclasses.replace(t, epochs=0) for t in tasks])  # warm-up: evaluate only
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            outs = ex.run(tasks)
            times.append(time.perf_counter() - t)
    bad = [o.model_id for o in outs if not o.ok]
    if bad:
        raise SystemExit(f"children failed: {bad}: {outs[0].error}")
    return {"startup": startup, "times": times, "acc": [o.eval["accuracy"] for o in outs]}


def machine_info(device: str) -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    info = (f"CPU: {model}, {cpu_count()} usable cores, load average "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__}; "
            f"auto settings on {device}: {auto_settings(device)}")
    if device == "cuda":
        names = [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]
        info += f"\nGPU: {torch.cuda.device_count()} x {names[0]}"
    return info


def configurations(args) -> list[tuple[str, int, int, object]]:
    """(label, processes, threads each, executor factory) for each configuration to time."""
    split = args.split
    if args.gpu:
        gpus = torch.cuda.device_count()
        rows = [("serial (one at a time)", 1, 0, lambda: SerialExecutor(split, "cuda"))]
        for k in args.per_gpu:
            rows.append((f"local, {k} worker(s)/GPU", k * gpus, 0,
                         lambda k=k: LocalExecutor(split, "cuda", workers=k * gpus)))
        return rows
    cores = cpu_count()
    return [("serial", 1, cores, lambda: SerialExecutor(split, "cpu")),
            ("local, 1 worker", 1, cores, lambda: LocalExecutor(split, "cpu", 1, cores)),
            (f"local, {cores} workers", cores, 1, lambda: LocalExecutor(split, "cpu", cores, 1))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpu", action="store_true", help="time on CUDA: 1, 2, 4 workers per GPU")
    p.add_argument("--children", type=int, help="children in the step (CPU 4, GPU 8)")
    p.add_argument("--epochs", type=int, help="epochs per child (CPU 1, GPU 2)")
    p.add_argument("--images", type=int, help="training images (CPU 2000, GPU all 8000)")
    p.add_argument("--widths", type=int, nargs=3, help="starting widths (CPU 16 32 64, GPU "
                   "32 64 128)")
    p.add_argument("--n-nm", type=int, default=5, help="morphisms per child (default 5)")
    p.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    gpu = args.gpu
    args.children = args.children or (8 if gpu else 4)
    args.epochs = args.epochs or (2 if gpu else 1)
    args.images = args.images if args.images is not None else (0 if gpu else 2000)
    args.widths = tuple(args.widths or ((32, 64, 128) if gpu else (16, 32, 64)))
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    device = "cuda" if gpu else "cpu"
    args.split = make_split(args.images)
    print(machine_info(device))
    print(f"step: {args.children} children (starting net {args.widths} + {args.n_nm} random "
          f"morphisms each), {args.epochs} epoch(s) on {len(args.split.train)} images, eval on "
          f"{len(args.split.val)}; median of {args.repeats} after a warm-up\n")
    tasks = make_step(args.split, args.children, args.epochs, args.widths, args.n_nm,
                      None if gpu else cpu_count())
    rows = []
    for label, procs, threads, factory in configurations(args):
        if not gpu:
            tasks = [dataclasses.replace(t, config=dataclasses.replace(t.config, threads=threads))
                     for t in tasks]
        r = time_step(factory, tasks, args.repeats)
        rows.append((label, procs, threads, r))
        print(f"  ... {label}: {[round(t, 2) for t in r['times']]}", flush=True)
    base = statistics.median(rows[0][3]["times"])
    print(f"\n{'configuration':<26} {'procs':>5} {'thr':>4} {'start s':>8} {'step s':>8} "
          f"{'min-max':>13} {'speedup':>8} {'child/s':>8}")
    for label, procs, threads, r in rows:
        med = statistics.median(r["times"])
        print(f"{label:<26} {procs:>5} {threads or '-':>4} {r['startup']:>8.2f} {med:>8.2f} "
              f"{min(r['times']):>6.2f}-{max(r['times']):<6.2f} {base / med:>7.2f}x "
              f"{args.children / med:>8.2f}")
    accs = {tuple(round(a, 4) for a in r["acc"]) for *_, r in rows}
    print(f"\nchildren's val accuracies identical across configurations: {len(accs) == 1}")


if __name__ == "__main__":
    main()
