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

`--scale small` (issue 13) is a smaller scale at which successive halving can halve the child
training: 10,000 of the 16x16 training images (8,000 train / 2,000 validation), 4 epochs per
child; its runs go to runs/table1-small. Its default variants are nash, halving (rungs 1+3,
eta 4), halving16 (n_neigh 16, rungs 1+3, eta 4) and random, and nash and halving are also
retrained from scratch (the paper's Table 2; `--no-retrain` skips that). Also available:
halving3 (rungs 1+1+2, eta 2: half of NASH's child epochs) and halving3x16 (the same with 16
children, NASH's cost); BENCHMARKS.md has all six:

    nice -n 19 .venv/bin/python benchmarks/cpu_table1.py --scale small --threads 1 \
        --variants nash halving --seeds 0 1 2 3 4 &
    nice -n 19 .venv/bin/python benchmarks/cpu_table1.py --scale small --threads 1 \
        --variants halving16 random --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/cpu_table1.py --scale small --report-only --seeds 0 1 2 3 4 \
        --variants nash halving halving3 halving16 halving3x16 random
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

from morphclimb.commands import run_extra
from morphclimb.config import SearchConfig
from morphclimb.data import load_dataset
from morphclimb.data.load import load_split
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
SCALES = {
    "full": dict(subset=None, n_steps=3, n_neigh=8, n_nm=2, epoch_pretrain=4, epoch_neigh=2,
                 epoch_final=6, widths=(8, 16, 32), lr_start=0.05, lr_end=0.0),
    # issue 13: 4 epochs per child, so that rungs of 1 + 3 epochs can cut the child training
    # to under half (8 x 1 + 2 x 3 = 14 candidate-epochs per step against 8 x 4 = 32); the
    # training set shrunk to 10,000 images (8,000 train / 2,000 validation: .npz data hold out
    # 20%) to pay for the longer children
    "small": dict(subset=10000, n_steps=3, n_neigh=8, n_nm=2, epoch_pretrain=4, epoch_neigh=4,
                  epoch_final=6, widths=(8, 16, 32), lr_start=0.05, lr_end=0.0),
}
SCALE = dict(SCALES["full"])   # the scale in use (main() sets it from --scale)
DEFAULT_OUT = {"full": "runs/table1", "small": "runs/table1-small"}
VARIANTS = {
    "nash": ("n_steps=3, n_neigh=8", {}),
    "nosgdr": ("n_steps=3, n_neigh=8, no SGDR", {"sgdr_climb": False}),
    "random": ("random networks (n_steps=3, n_neigh=1)", {"n_neigh": 1}),
    # successive halving (issue 13): rungs of 1 and 3 epochs, the best ceil(n/4) go on
    "halving": ("n_steps=3, n_neigh=8, halving rungs 1+3, eta 4", {"rungs": (1, 3), "eta": 4}),
    "halving16": ("n_steps=3, n_neigh=16, halving rungs 1+3, eta 4",
                  {"n_neigh": 16, "rungs": (1, 3), "eta": 4}),
    # three rungs: 8 x 1 + 4 x 1 + 2 x 2 = 16 candidate-epochs per step, half of NASH's 32
    "halving3": ("n_steps=3, n_neigh=8, halving rungs 1+1+2, eta 2",
                 {"rungs": (1, 1, 2), "eta": 2}),
    # ... with 16 children: 16 x 1 + 8 x 1 + 4 x 2 = 32 candidate-epochs, NASH's cost
    "halving3x16": ("n_steps=3, n_neigh=16, halving rungs 1+1+2, eta 2",
                    {"n_neigh": 16, "rungs": (1, 1, 2), "eta": 2}),
    # issue 19: the paper's share of final epochs within the small scale's 22 in total
    # (4 + 3 x 2 + 12: 55% final, against 4 + 3 x 4 + 6: 27%)
    "share55": ("n_steps=3, n_neigh=8, 2 epochs per child, 12 final",
                {"epoch_neigh": 2, "epoch_final": 12}),
}
DEFAULT_VARIANTS = {"full": ["nash", "nosgdr", "random"],
                    "small": ["nash", "halving", "halving16", "random"]}
RETRAIN_VARIANTS = ("nash", "halving")   # retrained from scratch with --retrain (Table 2)
# config keys a variant may set, with SearchConfig's defaults (a run must match its variant)
VARIANT_KEYS = {"n_neigh": None, "sgdr_climb": True, "rungs": [], "eta": 3,
                "epoch_neigh": None, "epoch_final": None}
SCALE_KEYS = ("n_neigh", "epoch_neigh", "epoch_final")   # variant keys the scale sets


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


def run_one(variant: str, seed: int, data: str, out: Path, threads: int | None = None,
            retrain: bool = False) -> dict:
    """Run (or resume, or reuse) one search; returns its results.json.

    `retrain`: also train the found architecture from scratch (results.json "retrain"); a
    run that finished without it gets it added (as `morphclimb retrain RUN_DIR` does).
    """
    run_dir = out / f"{variant}-s{seed}"
    done = finished(run_dir, variant)
    if done is None and (run_dir / "journal.jsonl").exists():
        check_scale(run_dir, RunDir.open(run_dir).config(), variant)
        done = resume(run_dir, **({"threads": threads} if threads else {})).results
    if done is None:
        cfg = SearchConfig(**{**SCALE, **VARIANTS[variant][1], "dataset": data, "seed": seed,
                              "threads": threads, "retrain": retrain})
        done = hill_climb(cfg, run_dir).results
    if retrain and "retrain" not in done:
        done = run_extra(run_dir, "retrain", {"threads": threads})
    return done


def finished(run_dir: Path, variant: str | None = None) -> dict | None:
    """results.json of a finished run, else None; refuses a run made at another SCALE."""
    if (run_dir / "results.json").exists() and RunDir.open(run_dir).state().finished is not None:
        results = json.loads((run_dir / "results.json").read_text())
        check_scale(run_dir, results["config"], variant)
        return results
    return None


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def check_scale(run_dir: Path, cfg: dict, variant: str | None = None) -> None:
    """Stop if a run under --out was made at another SCALE (it must not mix into the table),
    or, given its variant, with other variant settings (n_neigh, SGDR, rungs, eta)."""
    stale = {k: (cfg.get(k), v) for k, v in SCALE.items()
             if k not in VARIANT_KEYS and cfg.get(k) != _plain(v)}
    if variant is not None:
        want = {**VARIANT_KEYS, **{k: SCALE[k] for k in SCALE_KEYS},
                **VARIANTS[variant][1]}
        if not want["rungs"]:
            del want["eta"]        # eta means nothing without rungs (and older runs lack it)
        for k, v in want.items():
            got = cfg.get(k, VARIANT_KEYS[k])
            if _plain(got) != _plain(v):
                stale[k] = (got, _plain(v))
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


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_TRAIN_IMAGES: dict[tuple, int] = {}


def train_images(cfg: dict) -> int:
    """How many training images the run's climb trained on (its split, rebuilt exactly)."""
    key = (cfg["dataset"], cfg.get("data_root"), cfg.get("subset"), cfg.get("val"),
           cfg.get("split_seed", 0))
    if key not in _TRAIN_IMAGES:
        c = SearchConfig(dataset=cfg["dataset"], data_root=cfg.get("data_root"),
                         subset=cfg.get("subset"), val=cfg.get("val"),
                         split_seed=cfg.get("split_seed", 0))
        _TRAIN_IMAGES[key] = len(load_split(c)[1].train)
    return _TRAIN_IMAGES[key]


def child_cost(run_dir: Path, n_train: int) -> tuple[float, float]:
    """The climb's child training, counted from the journal: (image-epochs, seconds).

    Every model_trained record of role child or incumbent (halving rungs included): epochs x
    training images, and the record's wall seconds (training + validation). model_0's
    pretraining, the final training and the jobs after it are not counted.
    """
    image_epochs = seconds = 0.0
    for r in journal_records(run_dir):
        if r.get("event") == "model_trained" and r.get("role") in ("child", "incumbent"):
            image_epochs += r["epochs"] * n_train
            seconds += r.get("seconds", 0.0)
    return image_epochs, seconds


def journal_records(run_dir: Path):
    """The records of a run's journal, read as they stand (a torn last line of a killed run
    left out)."""
    with open(Path(run_dir) / "journal.jsonl") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def paired(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """a - b over the seeds both have: per seed, mean, std, paired t (n - 1 dof)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    m, sd = mean_std(d)
    t = m / (sd / len(d) ** 0.5) if len(d) > 1 and sd > 0 else float("nan")
    return {"seeds": seeds, "diffs": d, "n": len(d), "mean": m, "std": sd, "t": t,
            "lower": sum(x < 0 for x in d)}


def ratios(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """a / b per seed both have: mean, median, min, max of the ratios."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    r = [a[s] / b[s] for s in seeds]
    return {"seeds": seeds, "ratios": r, "mean": statistics.mean(r),
            "median": statistics.median(r), "min": min(r), "max": max(r)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=list(SCALES), default="full",
                    help="full: 40,000 / 10,000 images, 2 epochs per child (the CPU Table 1); "
                    "small: 8,000 / 2,000 images, 4 epochs per child (for halving, issue 13)")
    ap.add_argument("--data", help="dataset path for morphclimb (default: the shared CIFAR-10 "
                    "copy, unpacked and downsampled to IMAGE_SIZE in /tmp)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                    help="default: nash nosgdr random (full), nash halving halving16 random "
                    "(small)")
    ap.add_argument("--out", help="default: runs/table1 (full), runs/table1-small (small)")
    ap.add_argument("--threads", type=int, help="torch threads per run (default: all cores)")
    ap.add_argument("--subset", type=int,
                    help="train on a stratified subset of this many images (default: all 50,000"
                    " at --scale full, 10,000 at small)")
    ap.add_argument("--retrain", action=argparse.BooleanOptionalAction,
                    help="also retrain the nash and halving runs' architectures from scratch "
                    "(Table 2; default: on at --scale small, off at full)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: summarise the runs under --out that have finished")
    args = ap.parse_args()
    SCALE.clear()
    SCALE.update(SCALES[args.scale])
    variants = args.variants or DEFAULT_VARIANTS[args.scale]
    for v in variants:
        rungs = VARIANTS[v][1].get("rungs")
        if rungs and sum(rungs) != SCALE["epoch_neigh"]:
            ap.error(f"variant {v} (rungs {'+'.join(map(str, rungs))}) needs epoch_neigh "
                     f"{sum(rungs)}; scale {args.scale} has epoch_neigh {SCALE['epoch_neigh']} "
                     f"(use --scale small)")
    retrain = args.retrain if args.retrain is not None else args.scale == "small"
    if args.subset is not None:
        SCALE["subset"] = args.subset
    if args.data:
        SCALE["dataset"] = args.data
    out = Path(args.out or DEFAULT_OUT[args.scale])
    data = None if args.report_only else dataset_path(args.data)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, "
          f"threads per new run {args.threads or torch.get_num_threads()}, torch {torch.__version__}")
    print(f"scale {args.scale}: {SCALE}, images {IMAGE_SIZE}x{IMAGE_SIZE} (unless --data)")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for seed in args.seeds:
        for v in variants:
            if args.report_only:
                r = finished(out / f"{v}-s{seed}", v)
                if r is not None:
                    results[v].append(r)
                continue
            t = time.perf_counter()
            r = run_one(v, seed, data, out, args.threads, retrain and v in RETRAIN_VARIANTS)
            results[v].append(r)
            print(f"{v} seed {seed}: test error {r['final']['test_error']:.2f}%, "
                  f"{r['final']['params']:,} params, {r['runtime_s'] / 60:.1f} min "
                  f"(this call {time.perf_counter() - t:.0f} s)", flush=True)
    print(f"\nCIFAR-10 (JPEG q75 copy, {IMAGE_SIZE}x{IMAGE_SIZE}), scale {args.scale}, "
          f"test error over seeds " + " ".join(map(str, args.seeds)))
    threads = sorted({r["config"]["threads"] or 0 for rs in results.values() for r in rs})
    print(f"torch threads per run in these runs: {threads} (0 = all cores)")
    print("| algorithm setting | runtime (min) | # params (mil.) | error +/- std (%) | runs | "
          "failed children | best val acc: model_0, after each step (%) |")
    print("|---|---|---|---|---|---|---|")
    summary: dict = {"scale": args.scale, "config": {k: _plain(v) for k, v in SCALE.items()},
                     "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
                     "threads_per_run": threads}

    def curve(c: list[float]) -> str:
        return " / ".join(f"{100 * a:.1f}" for a in c)

    for v in (v for v in variants if results[v]):
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
    paired_old = paired_differences(results)
    for v, d in paired_old.items():
        print(f"NASH minus {v}, same seed (same split, model_0 and first children): "
              f"{d['mean']:+.2f} +/- {d['std']:.2f} points over {d['n']} seeds; NASH lower in "
              f"{d['nash_better']} of {d['n']}")
    summary["paired"] = paired_old
    summary["costs"] = cost_report(results, variants, out)
    summary["table2"] = table2_report(results, variants)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


def cost_report(results: dict[str, list[dict]], variants: list[str], out: Path) -> dict:
    """Per variant: error, params, child-training image-epochs and wall seconds (each as a
    ratio to NASH's, paired by seed), and the paired test-error differences to NASH."""
    rows: dict[str, dict] = {}
    for v in (v for v in variants if results[v]):
        err, ie, sec = {}, {}, {}
        for r in results[v]:
            s = r["config"]["seed"]
            err[s] = r["final"]["test_error"]
            ie[s], sec[s] = child_cost(out / f"{v}-s{s}", train_images(r["config"]))
        rows[v] = {"error": err, "image_epochs": ie, "climb_s": sec,
                   "params": {r["config"]["seed"]: r["final"]["params"] for r in results[v]}}
    if not rows:
        return {}
    seeds = sorted({s for row in rows.values() for s in row["error"]})
    print(f"\nChild training (roles child + incumbent, halving rungs included) counted from the "
          f"journals; means over the seeds each variant finished (of {seeds}); ratios to NASH "
          f"paired by seed (mean, median, range)")
    print("| variant | runs | test error +/- std (%) | # params (mil.) | child image-epochs (M) "
          "| / NASH | climb wall (min) | / NASH | minus NASH: test error (points), paired "
          "+/- std | t | lower than NASH |")
    print("|---|---:|---:|---:|---:|---|---:|---|---|---:|---|")
    nash = rows.get("nash")
    report = {}
    for v, row in rows.items():
        em, es = mean_std(list(row["error"].values()))
        iem = statistics.mean(row["image_epochs"].values()) / 1e6
        secm = statistics.mean(row["climb_s"].values()) / 60
        pm = statistics.mean(row["params"].values()) / 1e6
        rep = {**row, "error_mean": em, "error_std": es}
        cells = ["-", "-", "-", "-", "-"]
        if nash is not None and v != "nash":
            ri = ratios(row["image_epochs"], nash["image_epochs"])
            rs = ratios(row["climb_s"], nash["climb_s"])
            d = paired(row["error"], nash["error"])
            rep.update(ratio_image_epochs=ri, ratio_climb_s=rs, minus_nash=d)

            def fr(x: dict | None) -> str:
                return "-" if x is None else (f"{x['mean']:.2f} (med {x['median']:.2f}, "
                                              f"{x['min']:.2f}-{x['max']:.2f}; {len(x['seeds'])})")

            cells = [fr(ri), fr(rs), "-", "-", "-"]
            if d is not None:
                cells[2:] = [f"{d['mean']:+.2f} +/- {d['std']:.2f} (n {d['n']})",
                             f"{d['t']:+.2f}", f"{d['lower']} of {d['n']}"]
        print(f"| {v} | {len(row['error'])} | {em:.2f} +/- {es:.2f} | {pm:.3f} | {iem:.3f} | "
              f"{cells[0]} | {secm:.1f} | {cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} |")
        report[v] = rep
    print("\nPer seed: test error % / child image-epochs (M) / climb wall (min)")
    for v, row in rows.items():
        print(f"  {v}: " + "; ".join(
            f"s{s} {row['error'][s]:.2f} / {row['image_epochs'][s] / 1e6:.3f} / "
            f"{row['climb_s'][s] / 60:.1f}" for s in sorted(row["error"])))
    for v, rep in report.items():
        d = rep.get("minus_nash")
        if d is not None:
            print(f"{v} minus NASH, test error per seed {d['seeds']}: "
                  + ", ".join(f"{x:+.2f}" for x in d["diffs"])
                  + f"; mean {d['mean']:+.2f} +/- {d['std']:.2f}, paired t {d['t']:+.2f} "
                  f"({d['n'] - 1} dof)")
    return report


def table2_report(results: dict[str, list[dict]], variants: list[str]) -> dict:
    """The paper's Table 2: the found architecture retrained from scratch against the search's
    own final model, paired by seed (retrain minus search)."""
    out = {}
    for v in (v for v in variants if any("retrain" in r for r in results[v])):
        rs = [r for r in results[v] if "retrain" in r]
        search = {r["config"]["seed"]: r["final"]["test_error"] for r in rs}
        again = {r["config"]["seed"]: r["retrain"]["test_error"] for r in rs}
        out[v] = {"search": search, "retrain": again, "retrain_minus_search":
                  paired(again, search),
                  "epochs": {r["config"]["seed"]: r["retrain"]["epochs"] for r in rs}}
    if not out:
        return out
    print("\nTable 2: the found architecture retrained from scratch (same total epochs, "
          "train + validation) vs the search's final model, test error %, paired by seed")
    print("| variant | runs | search +/- std | retrained +/- std | retrain minus search "
          "+/- std | t | retrain lower |")
    print("|---|---:|---:|---:|---|---:|---|")
    for v, t in out.items():
        sm, ss = mean_std(list(t["search"].values()))
        rm, rsd = mean_std(list(t["retrain"].values()))
        d = t["retrain_minus_search"]
        print(f"| {v} | {d['n']} | {sm:.2f} +/- {ss:.2f} | {rm:.2f} +/- {rsd:.2f} | "
              f"{d['mean']:+.2f} +/- {d['std']:.2f} | {d['t']:+.2f} | {d['lower']} of {d['n']} |")
    for v, t in out.items():
        print(f"  {v} per seed (search -> retrained, epochs): " + "; ".join(
            f"s{s} {t['search'][s]:.2f} -> {t['retrain'][s]:.2f} ({t['epochs'][s]})"
            for s in sorted(t["search"])))
    return out


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
