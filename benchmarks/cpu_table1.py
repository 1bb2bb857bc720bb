"""The paper's Table 1 at CPU scale: NASH vs random networks vs NASH without SGDR.

Runs every (variant, seed) as a normal morphclimb search into runs/table1/<variant>-s<seed>
(finished runs are skipped and killed ones resumed, so the script can be re-run), then prints
test error mean +/- std, parameters and runtime per variant, in the shape of the paper's table.

    .venv/bin/python benchmarks/cpu_table1.py                 # 3 seeds, all three variants
    .venv/bin/python benchmarks/cpu_table1.py --seeds 0 --variants nash
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

import torch

from morphclimb.config import SearchConfig
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb, resume

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
# Scaled so that one NASH run (n_neigh 8) takes about 10 minutes on a 2-core CPU.
# (An earlier scale with subset 10,000 and n_NM 3 took 8-36 min per run: children compounded
# x4 widenings up to 28M parameters.)
SCALE = dict(subset=8_000, n_steps=3, n_neigh=8, n_nm=2, epoch_pretrain=4, epoch_neigh=2,
             epoch_final=6, widths=(16, 32, 64), lr_start=0.05, lr_end=0.0)
VARIANTS = {
    "nash": ("n_steps=3, n_neigh=8", {}),
    "nosgdr": ("n_steps=3, n_neigh=8, no SGDR", {"sgdr_climb": False}),
    "random": ("random networks (n_steps=3, n_neigh=1)", {"n_neigh": 1}),
}


def dataset_dir(arg: str | None) -> str:
    """The CIFAR-10 JPEG tree, unpacked to /tmp on first use."""
    if arg:
        return arg
    target = Path("/tmp/cifar10-jpeg")
    if not (target / "train").is_dir():
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall("/tmp", filter="data")
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
    if (run_dir / "results.json").exists() and RunDir.open(run_dir).records("run_finished"):
        results = json.loads((run_dir / "results.json").read_text())
        check_scale(run_dir, results["config"])
        return results
    return None


def check_scale(run_dir: Path, cfg: dict) -> None:
    """Stop if a run under --out was made at another SCALE (it must not mix into the table)."""
    stale = {k: (cfg.get(k), v) for k, v in SCALE.items()
             if k != "n_neigh" and cfg.get(k) != (list(v) if isinstance(v, tuple) else v)}
    if stale:
        raise SystemExit(f"{run_dir} was run at another scale (found, wanted: {stale}); "
                         f"use another --out")


def summarise(rows: list[dict]) -> dict:
    """Mean and std of error, params and runtime over runs."""
    errs = [r["final"]["test_error"] for r in rows]
    return {"n": len(rows), "error_mean": statistics.mean(errs),
            "error_std": statistics.stdev(errs) if len(errs) > 1 else 0.0,
            "params_m": statistics.mean(r["final"]["params"] for r in rows) / 1e6,
            "runtime_min": statistics.mean(r["runtime_s"] for r in rows) / 60}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="CIFAR-10 image-folder tree (default: unpack the shared copy)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="runs/table1")
    ap.add_argument("--threads", type=int, help="torch threads per run (default: all cores)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: summarise the runs under --out that have finished")
    args = ap.parse_args()
    out = Path(args.out)
    data = None if args.report_only else dataset_dir(args.data)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads per run {args.threads or torch.get_num_threads()}, torch {torch.__version__}")
    print(f"scale: {SCALE}")
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
    print("\nCIFAR-10 (JPEG q75 copy), test error over seeds " + " ".join(map(str, args.seeds)))
    print("| algorithm setting | runtime (min) | # params (mil.) | error +/- std (%) | runs | "
          "failed children |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for v in (v for v in args.variants if results[v]):
        s = summarise(results[v])
        summary[v] = s
        fails = sum(r.get("children_failed", 0) for r in results[v])
        print(f"| {VARIANTS[v][0]} | {s['runtime_min']:.1f} | {s['params_m']:.3f} | "
              f"{s['error_mean']:.2f} +/- {s['error_std']:.2f} | {s['n']} | {fails} |")
        for r in results[v]:
            print(f"|   seed {r['config']['seed']} | {r['runtime_s'] / 60:.1f} | "
                  f"{r['final']['params'] / 1e6:.3f} | {r['final']['test_error']:.2f} | 1 | "
                  f"{r.get('children_failed', 0)} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
