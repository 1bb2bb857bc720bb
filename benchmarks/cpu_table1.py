"""The paper's Table 1 at CPU scale: NASH vs random networks vs NASH without SGDR.

Runs every (variant, seed) as a normal morphclimb search into runs/table1/<variant>-s<seed>
(finished runs are skipped and killed ones resumed, so the script can be re-run), then prints
test error mean +/- std, parameters and runtime per variant, in the shape of the paper's table,
and the per-seed paired differences. BENCHMARKS.md has the results.

    .venv/bin/python benchmarks/cpu_table1.py                 # seeds 0 1 2, all three variants
    # as in BENCHMARKS.md: 5 seeds, two runs at a time with one thread each (2 cores)
    .venv/bin/python benchmarks/cpu_table1.py --threads 1 --variants nash --seeds 0 1 2 3 4 &
    .venv/bin/python benchmarks/cpu_table1.py --threads 1 --variants nosgdr random --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/cpu_table1.py --report-only --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from morphclimb.config import SearchConfig
from morphclimb.data import load_dataset
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb, resume

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
# Scaled so that one NASH run (n_neigh 8) takes minutes, not hours, on a 2-core CPU. Earlier
# scales at 32x32 with widths 16-32-64 took 2-60+ min per run: a lineage with two x4 widenings
# reached 10-28M parameters, and at 32x32 one such child trained for 5-15 min. Halving both
# the image side (2x2 mean pooling) and the widths divides every network's FLOPs by 16, which
# bounds the slowest run and leaves time for the full training set (the paper's 40,000 /
# 10,000 train/validation split).
IMAGE_SIZE = 16
SCALE = dict(subset=None, n_steps=3, n_neigh=8, n_nm=2, epoch_pretrain=4, epoch_neigh=2,
             epoch_final=6, widths=(8, 16, 32), lr_start=0.05, lr_end=0.0)
VARIANTS = {
    "nash": ("n_steps=3, n_neigh=8", {}),
    "nosgdr": ("n_steps=3, n_neigh=8, no SGDR", {"sgdr_climb": False}),
    "random": ("random networks (n_steps=3, n_neigh=1)", {"n_neigh": 1}),
}


def dataset_path(arg: str | None) -> str:
    """The CIFAR-10 copy at IMAGE_SIZE: the JPEG tree (unpacked to /tmp on first use), or an
    .npz of it downsampled by mean pooling (written to /tmp on first use)."""
    if arg:
        return arg
    tree = Path("/tmp/cifar10-jpeg")
    if not (tree / "train").is_dir():
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall("/tmp", filter="data")
    if IMAGE_SIZE == 32:
        return str(tree)
    target = Path(f"/tmp/cifar10-jpeg-{IMAGE_SIZE}px.npz")
    if not target.exists():
        ds = load_dataset(str(tree))
        f = 32 // IMAGE_SIZE

        def pool(x: np.ndarray) -> np.ndarray:
            n = len(x)
            x = x.reshape(n, IMAGE_SIZE, f, IMAGE_SIZE, f, 3).mean(axis=(2, 4))
            return np.rint(x).astype(np.uint8)

        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, x=pool(ds.train.x), y=ds.train.y, x_test=pool(ds.test.x),
                 y_test=ds.test.y, classes=np.array(ds.classes))
        os.replace(tmp, target)
    return str(target)


def run_one(variant: str, seed: int, data: str, out: Path, threads: int | None = None) -> dict:
    """Run (or resume, or reuse) one search; returns its results.json."""
    run_dir = out / f"{variant}-s{seed}"
    if (done := finished(run_dir)) is not None:
        return done
    if (run_dir / "journal.jsonl").exists():
        check_scale(run_dir, RunDir.open(run_dir).config())
        return resume(run_dir).results
    cfg = SearchConfig(**{**SCALE, **VARIANTS[variant][1], "dataset": data, "seed": seed,
                          "threads": threads})
    return hill_climb(cfg, run_dir).results


def finished(run_dir: Path) -> dict | None:
    """results.json of a finished run, else None; refuses a run made at another SCALE."""
    if (run_dir / "results.json").exists() and RunDir.open(run_dir).state().finished is not None:
        results = json.loads((run_dir / "results.json").read_text())
        check_scale(run_dir, results["config"])
        return results
    return None


def check_scale(run_dir: Path, cfg: dict) -> None:
    """Stop if a run under --out was made at another SCALE (it must not mix into the table)."""
    stale = {k: (cfg.get(k), v) for k, v in SCALE.items()
             if k != "n_neigh" and cfg.get(k) != (list(v) if isinstance(v, tuple) else v)}
    # SCALE holds "dataset" when --data named one; else it must be the downsampled shared copy
    if ("dataset" not in SCALE and IMAGE_SIZE != 32
            and not str(cfg.get("dataset")).endswith(f"-{IMAGE_SIZE}px.npz")):
        stale["dataset"] = (cfg.get("dataset"), f"...-{IMAGE_SIZE}px.npz")
    if stale:
        raise SystemExit(f"{run_dir} was run at another scale (found, wanted: {stale}); "
                         f"use another --out")


def summarise(rows: list[dict]) -> dict:
    """Mean and std of error, params and runtime over runs."""
    errs = [r["final"]["test_error"] for r in rows]
    # the best validation accuracy after model_0 and after each step (how the climb progressed)
    curve = [statistics.mean(r["model0"]["val_accuracy"] for r in rows)]
    curve += [statistics.mean(r["steps"][i]["val_accuracy"] for r in rows)
              for i in range(min(len(r["steps"]) for r in rows))]
    return {"n": len(rows), "error_mean": statistics.mean(errs),
            "error_std": statistics.stdev(errs) if len(errs) > 1 else 0.0,
            "params_m": statistics.mean(r["final"]["params"] for r in rows) / 1e6,
            "runtime_min": statistics.mean(r["runtime_s"] for r in rows) / 60,
            "val_curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset path for morphclimb (default: the shared CIFAR-10 "
                    "copy, unpacked and downsampled to IMAGE_SIZE in /tmp)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="runs/table1")
    ap.add_argument("--threads", type=int, help="torch threads per run (default: all cores)")
    ap.add_argument("--subset", type=int,
                    help="train on a stratified subset of this many images (default: all 50,000)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: summarise the runs under --out that have finished")
    args = ap.parse_args()
    if args.subset is not None:
        SCALE["subset"] = args.subset
    if args.data:
        SCALE["dataset"] = args.data
    out = Path(args.out)
    data = None if args.report_only else dataset_path(args.data)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads per new run {args.threads or torch.get_num_threads()}, torch {torch.__version__}")
    print(f"scale: {SCALE}, images {IMAGE_SIZE}x{IMAGE_SIZE} (unless --data)")
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    for seed in args.seeds:
        for v in args.variants:
            if args.report_only:
                r = finished(out / f"{v}-s{seed}")
                if r is not None:
                    results[v].append(r)
                continue
            t = time.perf_counter()
            r = run_one(v, seed, data, out, args.threads)
            results[v].append(r)
            print(f"{v} seed {seed}: test error {r['final']['test_error']:.2f}%, "
                  f"{r['final']['params']:,} params, {r['runtime_s'] / 60:.1f} min "
                  f"(this call {time.perf_counter() - t:.0f} s)", flush=True)
    print(f"\nCIFAR-10 (JPEG q75 copy, {IMAGE_SIZE}x{IMAGE_SIZE}), test error over seeds "
          + " ".join(map(str, args.seeds)))
    threads = sorted({r["config"]["threads"] or 0 for rs in results.values() for r in rs})
    print(f"torch threads per run in these runs: {threads} (0 = all cores)")
    print("| algorithm setting | runtime (min) | # params (mil.) | error +/- std (%) | runs | "
          "failed children | best val acc: model_0, after each step (%) |")
    print("|---|---|---|---|---|---|---|")
    summary = {}

    def curve(c: list[float]) -> str:
        return " / ".join(f"{100 * a:.1f}" for a in c)

    for v in (v for v in args.variants if results[v]):
        s = summarise(results[v])
        summary[v] = s
        fails = sum(r.get("children_failed", 0) for r in results[v])
        print(f"| {VARIANTS[v][0]} | {s['runtime_min']:.1f} | {s['params_m']:.3f} | "
              f"{s['error_mean']:.2f} +/- {s['error_std']:.2f} | {s['n']} | {fails} | "
              f"{curve(s['val_curve'])} |")
        for r in results[v]:
            print(f"|   seed {r['config']['seed']} | {r['runtime_s'] / 60:.1f} | "
                  f"{r['final']['params'] / 1e6:.3f} | {r['final']['test_error']:.2f} | 1 | "
                  f"{r.get('children_failed', 0)} | {curve(summarise([r])['val_curve'])} |")
    paired = paired_differences(results)
    for v, d in paired.items():
        print(f"NASH minus {v}, same seed (same split, model_0 and first children): "
              f"{d['mean']:+.2f} +/- {d['std']:.2f} points over {d['n']} seeds; NASH lower in "
              f"{d['nash_better']} of {d['n']}")
    summary["paired"] = paired
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


def paired_differences(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Test error of NASH minus each other variant, per seed where both finished."""
    by_seed = {v: {r["config"]["seed"]: r["final"]["test_error"] for r in rs}
               for v, rs in results.items()}
    out = {}
    for v in (v for v in by_seed if v != "nash"):
        seeds = sorted(set(by_seed.get("nash", {})) & set(by_seed[v]))
        if len(seeds) < 2:
            continue
        diffs = [by_seed["nash"][s] - by_seed[v][s] for s in seeds]
        out[v] = {"n": len(diffs), "mean": statistics.mean(diffs),
                  "std": statistics.stdev(diffs), "nash_better": sum(d < 0 for d in diffs)}
    return out


if __name__ == "__main__":
    main()
