"""Wall time of one search step (its children trained at once) with 1 worker vs several.

    .venv/bin/python benchmarks/parallel.py [--children 4] [--epochs 1] [--images 1000]
                                            [--repeats 3]                   # CPU (default)
    python benchmarks/parallel.py --gpu [--children 8] [--epochs 2] [--repeats 3]
    .venv/bin/python benchmarks/parallel.py --gpu --dry-run    # check the GPU mode on a CPU

A step is built as the search builds it: `--children` children of the starting network, each
made by `--n-nm` random morphisms, trained `--epochs` epochs on the bundled mini CIFAR-10
(first `--images` training images) and evaluated on `--val` held-out images.

CPU: the same total threads (all usable cores) spent two ways: the serial executor (one
process, every core as torch intra-op threads) against the local executor with one worker per
core (each worker 1 thread), plus 1 worker x all threads (the cost of the process hop alone).
GPU (--gpu): one child at a time (serial; local executor with 1 worker per GPU) against the
local executor with 2 and 4 workers per GPU (children share each GPU).

Each executor is started and warmed up (each child evaluated once; "start+warm": spawn,
import torch, attach the data), then the configurations take turns (so load from elsewhere
hits them alike): round 0 is the first training step ("1st step": it includes creating the
kernels for these layer shapes in each process, as every new child does in a search), then
--repeats timed rounds ("step s": median, steady state).
"""

from __future__ import annotations

import argparse
import contextlib
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


def make_split(images: int | None, val: int = 2000):
    """The bundled mini CIFAR-10 split (`val` held out), its training part cut to `images`."""
    split = load_dataset("mini-cifar10").split(val=val, seed=0)
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


def time_steps(factories, per_config, repeats: int) -> list[dict]:
    """Start every executor, warm each up, then time the step round-robin (noise hits all)."""
    rows = []
    with contextlib.ExitStack() as stack:
        for (factory, label), own in zip(factories, per_config):
            t0 = time.perf_counter()
            ex = stack.enter_context(factory())
            ex.run([dataclasses.replace(t, epochs=0) for t in own])  # warm-up: evaluate only
            rows.append({"label": label, "ex": ex, "startup": time.perf_counter() - t0,
                         "times": [], "tasks": own})
        for k in range(repeats + 1):  # round 0: the first training step (kernel set-up)
            for row in rows:
                t = time.perf_counter()
                outs = row["ex"].run(row["tasks"])
                row["times"].append(time.perf_counter() - t)
                bad = [o.model_id for o in outs if not o.ok]
                if bad:
                    raise SystemExit(f"children failed: {bad}: {outs[0].error}")
                row["acc"] = [o.eval["accuracy"] for o in outs]
            print(f"  ... round {k}: " + ", ".join(f"{r['label']} {r['times'][-1]:.2f}s"
                                                   for r in rows), flush=True)
    for row in rows:
        row["first"] = row["times"].pop(0)
    return rows


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
    split, dev = args.split, args.device
    if args.gpu:
        gpus = torch.cuda.device_count() if dev == "cuda" else 1
        rows = [("serial (one at a time)", 1, 0, lambda: SerialExecutor(split, dev))]
        for k in args.per_gpu:
            rows.append((f"local, {k} worker(s)/GPU", k * gpus, 0,
                         lambda k=k: LocalExecutor(split, dev, workers=k * gpus)))
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
    p.add_argument("--images", type=int, help="training images (CPU 1000, GPU all)")
    p.add_argument("--val", type=int, help="validation images (CPU 500, GPU 2000)")
    p.add_argument("--widths", type=int, nargs=3, help="starting widths (CPU 16 32 64, GPU "
                   "32 64 128)")
    p.add_argument("--n-nm", type=int, default=5, help="morphisms per child (default 5)")
    p.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dry-run", action="store_true", help="with --gpu: run that mode on the CPU "
                   "with tiny sizes, to check the script before spending GPU time")
    args = p.parse_args()
    gpu = args.gpu
    args.children = args.children or (8 if gpu else 4)
    args.epochs = args.epochs or (2 if gpu else 1)
    args.images = args.images if args.images is not None else (0 if gpu else 1000)
    args.val = args.val or (2000 if gpu else 500)
    args.widths = tuple(args.widths or ((32, 64, 128) if gpu else (16, 32, 64)))
    if args.dry_run:
        args.children, args.epochs, args.images, args.val = 3, 1, 64, 64
        args.widths, args.repeats = (4, 8, 8), 1
    elif gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (or add --dry-run to test it on the CPU)")
    device = args.device = "cuda" if gpu and not args.dry_run else "cpu"
    args.split = make_split(args.images, args.val)
    print(machine_info(device))
    print(f"step: {args.children} children (starting net {args.widths} + {args.n_nm} random "
          f"morphisms each), {args.epochs} epoch(s) on {len(args.split.train)} images, eval on "
          f"{len(args.split.val)}; median of {args.repeats} after a warm-up\n")
    tasks = make_step(args.split, args.children, args.epochs, args.widths, args.n_nm,
                      None if device == "cuda" else cpu_count())
    configs = configurations(args)
    per_config = []
    for _, _, threads, _ in configs:  # CPU: each configuration's thread count in its tasks
        per_config.append(tasks if gpu else [dataclasses.replace(
            t, config=dataclasses.replace(t.config, threads=threads)) for t in tasks])
    timed = time_steps([(factory, label) for label, _, _, factory in configs], per_config,
                       args.repeats)
    rows = [(label, procs, threads, r) for (label, procs, threads, _), r in zip(configs, timed)]
    base = statistics.median(rows[0][3]["times"])
    first = rows[0][3]["first"]
    print(f"\n{'configuration':<24} {'procs':>5} {'thr':>3} {'start+warm':>10} {'1st step':>8} "
          f"{'(speedup)':>9} {'step s':>7} {'min-max':>13} {'speedup':>7} {'child/s':>7}")
    for label, procs, threads, r in rows:
        med = statistics.median(r["times"])
        print(f"{label:<24} {procs:>5} {threads or '-':>3} {r['startup']:>10.2f} "
              f"{r['first']:>8.2f} {first / r['first']:>8.2f}x {med:>7.2f} "
              f"{min(r['times']):>6.2f}-{max(r['times']):<6.2f} {base / med:>6.2f}x "
              f"{args.children / med:>7.2f}")
    accs = np.array([r["acc"] for *_, r in rows])
    print(f"\nchildren's val accuracies identical across configurations: "
          f"{bool((accs == accs[0]).all())} (largest difference {np.ptp(accs, 0).max():.4f}"
          f"{'; cuDNN kernels are not bitwise reproducible' if device == 'cuda' else ''})")


if __name__ == "__main__":
    main()
