"""Issue 17: one Pareto search (LEMONADE) against dedicated NASH runs at three sizes.

Per seed, at the small scale of cpu_table1.py (16x16 CIFAR-10 JPEG copy, a stratified
10,000-image subset: 8,000 train / 2,000 validation, the 10,000 test images; model_0 widths
8-16-32 pretrained 4 epochs, n_NM 2, n_neigh 8, 4 epochs per candidate, 6 final epochs on
train + validation, lr 0.05 -> 0, SGDR in the climb), all paired by seed (same split, same
model_0 weights, the same seeds for everything the runs share):

* three NASH runs (`nash-small`, `nash-medium`, `nash-large`), n_steps 3, each with
  `max_params` = 4, 16 and 64 x model_0's parameters (6,418 at widths 8-16-32: 25,672,
  102,688 and 410,752; children over the limit are redrawn, never trained). The sizes are
  fixed from model_0's architecture before any run and the same for every seed: a factor 4
  apart, evenly spread in log size; the small one binds after about one widening, the medium
  one is near where unconstrained NASH ends at this scale (0.08-0.87M params in
  runs/table1-small, 0.111M on average in BENCHMARKS.md), the large one binds rarely;
* one Pareto search (`pareto`): strategy=pareto, objective params, approximate=true
  (LEMONADE's approximate morphisms; their children learn from their parent, distill_weight
  0.5, temperature 4), n_neigh 8 of n_draw 32 (4 x n_neigh) children trained per
  generation, `max_params` = the large size (no child training goes to networks no size
  admits), front_final 0 (every front member gets its final training and a test error).
  Budget: the largest number of generations whose candidate-epochs are at most HALF of the
  three NASH runs' together, at the same n_neigh and epochs per candidate: NASH 3 runs x 3
  steps x 8 x 4 = 288 candidate-epochs, Pareto 4 generations x 8 x 4 = 128 (44%). The issue
  allows up to 100%, but its goal is half of the NASH runs' summed cost, and the Pareto
  search also pays for every member's final training; the budget is chosen so that the goal
  can be met, and the cost is measured, not assumed. `--variants pareto-full` adds a Pareto
  search with the issue's full budget (9 generations, 288 candidate-epochs, 100%) into
  `pareto-full-s<seed>`: what more generations buy, at what cost. `--variants pareto-floor`
  is `pareto` with `min_params` = model_0's parameters: no child smaller than the start is
  trained (in seed 0 of `pareto`, 15 of its 32 children were, down to 157 parameters, far
  below the smallest size compared; the floor gives those trainings to the sizes asked for).

Why front_final 0 and not a K: the member compared at a size is the best (lowest validation
error) front member with params <= that size, which on a front is the largest member under the
limit; front_final=K picks K members spread over log size, which need not be these. Training
every member's final is also what a user of the whole front pays. The members' final
trainings are independent of each other and of the climb, so the report also gives, from the
same journal records, the cost had only the compared members (and the most accurate one, the
run's `final`) been trained: what front_final restricted to the compared members would cost.

Compared per size: the member's test error (its final training) against the NASH run's final
test error, paired by seed: mean +/- std of Pareto minus NASH, t = mean / (std / sqrt n)
(n - 1 dof), in how many seeds the Pareto member is lower. Hypervolume in (test error %,
log10 params), both minimised, reference point (100 %, log10(2 x the large size)) =
(100, 5.915): of every tested front member, of the three compared members, and of the three
NASH answers as a 3-point front (front.hypervolume), paired by seed.

Cost, measured per run: "training s" = results.json runtime_s (the seconds of every
training: pretraining, candidates, final trainings, each with its evaluation); "clock" = the
run's search clock (journal, summed over sessions, downtime excluded: wall time including
making children and loading data); child image-epochs and seconds (t1.child_cost). The NASH
cost is the three runs' sum, the ratio Pareto / NASH sum is paired by seed. The goal: within
0.5 points of the dedicated run (or better) at every size, at most half of their summed
cost (checked on training seconds and on clock).

Jobs go to <out>/<job>-s<seed> as ordinary morphclimb runs (a finished run is reused, a
killed one resumed with morphclimb.nash.resume; a run made with other settings is refused).
Jobs are claimed through lock files (final_gap.claim: <out>/gap/claims), a job's record is
<out>/gap/<job>-s<seed>.json, so two processes with one thread each share the list:

    nice -n 19 .venv/bin/python benchmarks/pareto.py --threads 1 --seeds 0 1 2 3 4 &
    nice -n 19 .venv/bin/python benchmarks/pareto.py --threads 1 --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/pareto.py --report-only --seeds 0 1 2 3 4

`--smoke`: the same jobs at a tiny scale (600 images, 1 epoch everywhere, NASH n_steps 2 with
n_neigh 2, Pareto 3 generations) into /tmp/pareto-bench-smoke, to check the script in a
minute or two; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import cpu_table1 as t1  # noqa: E402
import final_gap as fg  # noqa: E402
from morphclimb.config import SearchConfig  # noqa: E402
from morphclimb.front import hypervolume  # noqa: E402
from morphclimb.journal import RunDir  # noqa: E402
from morphclimb.model0 import starting_arch  # noqa: E402
from morphclimb.nash import hill_climb, resume  # noqa: E402

SMOKE = dict(subset=600, n_steps=2, n_neigh=2, n_nm=2, epoch_pretrain=1, epoch_neigh=1,
             epoch_final=1, widths=(8, 16, 32), lr_start=0.05, lr_end=0.0)
SIZES = {"small": 4, "medium": 16, "large": 64}     # max_params = factor x model_0's params
# Pareto variants: their candidate-epochs as a share (at most) of the three NASH runs'
BUDGETS = {"pareto": 0.5, "pareto-full": 1.0, "pareto-floor": 0.5}
# Pareto variants with a size floor for children (min_params), as a factor x model_0's params
FLOORS = {"pareto-floor": 1}
NUM_CLASSES = 10
DEFAULT_OUT = {False: "runs/pareto-bench", True: "/tmp/pareto-bench-smoke"}


def model0_params() -> int:
    """model_0's parameters at the scale in use (CIFAR-10: 3 channels, 10 classes)."""
    return starting_arch(3, NUM_CLASSES, t1.IMAGE_SIZE, tuple(t1.SCALE["widths"])).num_params


def max_params(size: str) -> int:
    return SIZES[size] * model0_params()


def pareto_steps(variant: str) -> int:
    """Generations of a Pareto variant: the most whose candidate-epochs (same n_neigh and
    epochs per candidate) are at most its share of the NASH runs' together."""
    return math.floor(BUDGETS[variant] * len(SIZES) * t1.SCALE["n_steps"])


def ref_point() -> tuple[float, float]:
    """Hypervolume reference: (100 % test error, log10 of twice the largest size)."""
    return 100.0, math.log10(2 * max_params("large"))


def nash_jobs() -> list[str]:
    return [f"nash-{s}" for s in reversed(SIZES)]     # the largest (slowest) first


def job_config(job: str) -> dict:
    """A job's settings (all but dataset, seed and threads)."""
    if job.startswith("nash-"):
        return {**t1.SCALE, "max_params": max_params(job.removeprefix("nash-"))}
    floor = {"min_params": FLOORS[job] * model0_params()} if job in FLOORS else {}
    return {**t1.SCALE, "n_steps": pareto_steps(job), "strategy": "pareto", "approximate": True,
            "objective": "params", "front_final": 0, "max_params": max_params("large"), **floor}


def jobs(seeds: list[int], variants: list[str]) -> list[tuple[str, int]]:
    """Every (job, seed), a seed's whole set before the next seed's (pairs complete early)."""
    return [(j, s) for s in seeds for j in [*variants, *nash_jobs()]]


def check_job(run_dir: Path, cfg: dict, job: str, data_given: bool) -> None:
    """Stop if a run under --out was made with other settings than its job's."""
    full = SearchConfig.from_dict(cfg)     # keys left out of config.json at their defaults
    stale = {k: (t1._plain(getattr(full, k)), t1._plain(v)) for k, v in job_config(job).items()
             if t1._plain(getattr(full, k)) != t1._plain(v)}
    if not data_given and not str(cfg.get("dataset")).endswith(f"-{t1.IMAGE_SIZE}px.npz"):
        stale["dataset"] = (cfg.get("dataset"), f"...-{t1.IMAGE_SIZE}px.npz")
    if stale:
        raise SystemExit(f"{run_dir} was run with other settings (found, wanted: {stale}); "
                         f"use another --out")


def finished(run_dir: Path, job: str, data_given: bool) -> dict | None:
    """results.json of a finished run of `job`, else None."""
    if (run_dir / "results.json").exists() and RunDir.open(run_dir).state().finished is not None:
        results = json.loads((run_dir / "results.json").read_text())
        check_job(run_dir, results["config"], job, data_given)
        return results
    return None


def training_tflop(run_dir: Path, n_train: int, n_full: int) -> float:
    """Forward TFLOPs of every training in the run's journal (pretraining, children,
    incumbents, final trainings): epochs x images x the model's forward MFLOPs per image, on
    train + validation for a final training (part train_full), else on train; evaluations
    left out. Unlike seconds, the same on a loaded machine as on a quiet one."""
    total = 0.0
    for r in t1.journal_records(run_dir):
        if r.get("event") == "model_trained":
            images = n_full if r.get("part") == "train_full" else n_train
            total += r["epochs"] * images * r["mflops"] * 1e6
    return total / 1e12


def compute(run_dir: Path, r: dict) -> dict:
    """The run's training compute (`tflop`) and each front member's final training's, in
    TFLOPs and in seconds (`final_tflop`, `final_s`: member -> cost) from its journal; `r`:
    its results.json."""
    n_train, n_full = t1.train_images(r["config"]), r["dataset"]["sizes"]["train"]
    finals = [t for t in RunDir.open(run_dir).state().trained.values()
              if t.get("role") == "final" and "parent" in t]
    return {"tflop": training_tflop(run_dir, n_train, n_full),
            "final_tflop": {t["parent"]: t["epochs"] * n_full * t["mflops"] / 1e6
                            for t in finals},
            "final_s": {t["parent"]: t.get("seconds", 0.0) for t in finals}}


def record(job: str, run_dir: Path, r: dict) -> dict:
    """What the report needs of a finished run (its results.json and journal)."""
    state = RunDir.open(run_dir).state()
    image_epochs, child_s = t1.child_cost(run_dir, t1.train_images(r["config"]))
    rec = {"job": job, "config": r["config"], "runtime_s": r["runtime_s"], "clock_s": state.clock,
           **compute(run_dir, r),
           "child_image_epochs": image_epochs, "child_s": child_s,
           "model0_params": r["model0"]["params"], "test_error": r["final"]["test_error"],
           "params": r["final"]["params"], "epochs_total": r["final"]["epochs_total"],
           "steps_run": r["climb"]["steps_run"], "redrawn": r["climb"]["redrawn"],
           "children_failed": r.get("children_failed", 0)}
    if "front" in r:
        rec["front"] = r["front"]
    return rec


def run_job(job: str, seed: int, out: Path, data: str, threads: int | None,
            data_given: bool) -> dict:
    """Run (or resume, or reuse) one job's run; returns its record."""
    run_dir = out / f"{job}-s{seed}"
    t = time.perf_counter()
    done = finished(run_dir, job, data_given)
    how = "reused"
    if done is None and (run_dir / "journal.jsonl").exists():
        check_job(run_dir, RunDir.open(run_dir).config(), job, data_given)
        done, how = resume(run_dir, **({"threads": threads} if threads else {})).results, "resumed"
    if done is None:
        cfg = SearchConfig(**{**job_config(job), "dataset": data, "seed": seed,
                              "threads": threads})
        done, how = hill_climb(cfg, run_dir).results, "new"
    return {**record(job, run_dir, done), "seed": seed, "how": how, "cpu": t1.cpu_model(),
            "threads": done["config"].get("threads"), "wall_s": time.perf_counter() - t}


def work(seeds: list[int], variants: list[str], out: Path, data: str, threads: int | None,
         data_given: bool) -> None:
    """Take the jobs not done and not claimed, one after another, until none is left."""
    if threads:
        torch.set_num_threads(threads)
    for job, seed in jobs(seeds, variants):
        res = fg.result_path(out, job, seed)
        if res.exists() or not fg.claim(out, job, seed):
            continue
        try:
            rec = run_job(job, seed, out, data, threads, data_given)
            res.write_text(json.dumps(rec, indent=1))
            print(f"{job} seed {seed} ({rec['how']}): test error {rec['test_error']:.2f}%, "
                  f"{rec['params']:,} params, training {rec['runtime_s'] / 60:.1f} min, "
                  f"clock {rec['clock_s'] / 60:.1f} min", flush=True)
        finally:
            (out / "gap" / "claims" / f"{job}-s{seed}").unlink(missing_ok=True)


# ------------------------------------------------------------------ the report
def load(out: Path, seeds: list[int], names: list[str], data_given: bool
         ) -> dict[str, dict[int, dict]]:
    """job -> seed -> record, for the jobs that finished (refused if made at other settings)."""
    got = {j: {s: json.loads(fg.result_path(out, j, s).read_text()) for s in seeds
               if fg.result_path(out, j, s).exists()} for j in names}
    for j, rs in got.items():
        for s, r in rs.items():
            check_job(fg.result_path(out, j, s), r["config"], j, data_given)
            if "tflop" not in r:    # a record written before the compute was counted
                run_dir = out / f"{j}-s{s}"
                r.update(compute(run_dir, json.loads((run_dir / "results.json").read_text())))
    return got


def best_within(front: list[dict], cap: int) -> dict:
    """The front member with params <= cap of lowest validation error (then the smaller)."""
    return min((m for m in front if m["params"] <= cap),
               key=lambda m: (m["val_error"], m["params"]))


def hv(points: list[tuple[float, float]]) -> float:
    """Hypervolume of (test error %, params) points in (error, log10 params)."""
    return hypervolume([(e, math.log10(p)) for e, p in points], ref_point())


def fmt_paired(d: dict | None, wins: int) -> list[str]:
    if d is None:
        return ["-", "-", "-"]
    t = f"{d['t']:+.2f}" if d["n"] > 1 and not math.isnan(d["t"]) else "-"
    return [f"{d['mean']:+.2f} +/- {d['std']:.2f}", t, f"{wins} of {d['n']}"]


def ms(xs) -> str:
    m, s = t1.mean_std(list(xs))
    return f"{m:.2f} +/- {s:.2f}"


def report_variant(variant: str, got: dict[str, dict[int, dict]]) -> dict:
    """The tables for one Pareto variant against the NASH runs, paired by seed."""
    par = got[variant]
    nash = {j: got[j] for j in nash_jobs()}
    seeds = sorted(s for s in par if all(s in nash[j] for j in nash))
    cfg = job_config(variant)
    print(f"\n### {variant}: {cfg['n_steps']} generations x {cfg['n_neigh']} x "
          f"{cfg['epoch_neigh']} epochs = {cfg['n_steps'] * cfg['n_neigh'] * cfg['epoch_neigh']}"
          f" candidate-epochs, against 3 x {t1.SCALE['n_steps']} x {t1.SCALE['n_neigh']} x "
          f"{t1.SCALE['epoch_neigh']} = {3 * t1.SCALE['n_steps'] * t1.SCALE['n_neigh'] * t1.SCALE['epoch_neigh']}"
          f" (NASH); complete seeds {seeds} (Pareto finished: {sorted(par)})")
    if not seeds:
        return {}
    summary: dict = {"seeds": seeds, "sizes": {}}
    picked = {s: {} for s in seeds}
    print("| size | max_params | NASH test error +/- std (%) | NASH params | Pareto member "
          "test error +/- std (%) | member params | Pareto minus NASH (points) | t | Pareto "
          "lower in | goal: <= +0.5 |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---|---|")
    for size in SIZES:
        cap, runs = max_params(size), nash[f"nash-{size}"]
        for s in seeds:
            picked[s][size] = best_within(par[s]["front"], cap)
        p_err = {s: picked[s][size]["test_error"] for s in seeds}
        n_err = {s: runs[s]["test_error"] for s in seeds}
        d = t1.paired(p_err, n_err)
        ok = d["mean"] <= 0.5
        goal = "met" if ok else f"missed by {d['mean'] - 0.5:.2f}"
        print(f"| {size} | {cap:,} | {ms(n_err.values())} | "
              f"{statistics.mean(runs[s]['params'] for s in seeds):,.0f} | "
              f"{ms(p_err.values())} | "
              f"{statistics.mean(picked[s][size]['params'] for s in seeds):,.0f} | "
              + " | ".join(fmt_paired(d, d["lower"])) + f" | {goal} |")
        summary["sizes"][size] = {"max_params": cap, "pareto": p_err, "nash": n_err,
                                  "paired": d, "goal_met": ok}
    # hypervolumes
    hv_all = {s: hv([(m["test_error"], m["params"]) for m in par[s]["front"]
                     if m.get("test_error") is not None]) for s in seeds}
    hv_3 = {s: hv([(m["test_error"], m["params"]) for m in picked[s].values()])
            for s in seeds}
    hv_n = {s: hv([(nash[j][s]["test_error"], nash[j][s]["params"]) for j in nash])
            for s in seeds}
    ref = ref_point()
    print(f"\nHypervolume in (test error %, log10 params), reference ({ref[0]:.0f}, "
          f"{ref[1]:.3f}); higher is better")
    print("| front | points per seed | hypervolume +/- std | minus NASH's 3 answers | t | "
          "higher in |")
    print("|---|---:|---:|---|---:|---|")
    print(f"| NASH, 3 runs' answers | 3 | {ms(hv_n.values())} | - | - | - |")
    for name, h, npts in (("Pareto, every tested member", hv_all,
                           "/".join(str(sum(m.get("test_error") is not None
                                            for m in par[s]["front"])) for s in seeds)),
                          ("Pareto, the 3 compared members", hv_3, "3")):
        d = t1.paired(h, hv_n)
        print(f"| {name} | {npts} | {ms(h.values())} | "
              + " | ".join(fmt_paired(d, sum(x > 0 for x in d["diffs"]))) + " |")
    summary["hypervolume"] = {"ref": ref, "pareto_all": hv_all, "pareto_3": hv_3,
                              "nash": hv_n}
    summary["cost"] = cost_table(par, nash, picked, seeds)
    print("\nPer seed, test error % (params) at sizes " + ", ".join(SIZES) + ": NASH | Pareto "
          "member (its climb epochs, before the final training); front size")
    for s in seeds:
        print(f"  s{s}: " + "; ".join(
            f"{nash[f'nash-{z}'][s]['test_error']:.2f} ({nash[f'nash-{z}'][s]['params']:,}) | "
            f"{picked[s][z]['test_error']:.2f} ({picked[s][z]['params']:,}, "
            f"{picked[s][z]['epochs']} ep)" for z in SIZES)
            + f"; front {len(par[s]['front'])}")
    return summary


def cost_table(par: dict[int, dict], nash: dict[str, dict[int, dict]],
               picked: dict[int, dict], seeds: list[int]) -> dict:
    """Measured cost of the Pareto search against the three NASH runs' sum, paired by seed."""
    def nash_sum(key: str) -> dict[int, float]:
        return {s: sum(nash[j][s][key] for j in nash) for s in seeds}

    def only_compared(r: dict, used: dict, key: str, finals: str) -> float:
        """`key` (runtime_s or tflop) had only the compared members and the most accurate
        one had a final training (`finals`: the per-member record of that measure)."""
        best = min(r["front"], key=lambda m: (m["val_error"], m["params"]))["id"]
        keep = {m["id"] for m in used.values()} | {best}
        return r[key] - sum(v for k, v in r[finals].items() if k not in keep)

    measures = (("compute", "tflop"), ("train", "runtime_s"), ("clock", "clock_s"),
                ("ie", "child_image_epochs"))
    rows = {
        "Pareto (every member's final)": {k: {s: par[s][key] for s in seeds}
                                          for k, key in measures},
        "Pareto (finals of the compared members only)": {
            "compute": {s: only_compared(par[s], picked[s], "tflop", "final_tflop")
                        for s in seeds},
            "train": {s: only_compared(par[s], picked[s], "runtime_s", "final_s")
                      for s in seeds}},
        **{f"NASH {j.removeprefix('nash-')}": {k: {s: nash[j][s][key] for s in seeds}
                                               for k, key in measures} for j in nash},
        "NASH, 3 runs together": {k: nash_sum(key) for k, key in measures},
    }
    base = rows["NASH, 3 runs together"]
    print("\nCost, means over the seeds; ratios to the 3 NASH runs together, paired by seed "
          "(mean, median, range). compute = forward TFLOPs of every training (epochs x images "
          "x MFLOPs; the same under any load); training = results.json runtime_s (every "
          "training and its evaluation, seconds: they move with the machine's load); clock = "
          "the run's search clock (journal)")
    print("| run | compute (TFLOP) | / NASH 3 | training (min) | / NASH 3 | clock (min) | "
          "/ NASH 3 | child image-epochs (M) | / NASH 3 |")
    print("|---|---:|---|---:|---|---:|---|---:|---|")

    def cell(row: dict, key: str, scale: float) -> list[str]:
        if key not in row:
            return ["-", "-"]
        r = t1.ratios(row[key], base[key])
        return [f"{statistics.mean(row[key].values()) / scale:.2f}",
                f"{r['mean']:.2f} (med {r['median']:.2f}, {r['min']:.2f}-{r['max']:.2f})"]

    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(cell(row, "compute", 1) + cell(row, "train", 60)
                                          + cell(row, "clock", 60) + cell(row, "ie", 1e6))
              + " |")
    out = {name: {k: {**v, "ratio": t1.ratios(v, base[k])} for k, v in row.items()}
           for name, row in rows.items()}
    return out


def verdict(summary: dict) -> None:
    if not summary:
        return
    bad = {z: r["paired"]["mean"] - 0.5 for z, r in summary["sizes"].items()
           if not r["goal_met"]}
    cost = summary["cost"]["Pareto (every member's final)"]
    cp, tr, ck = (cost[k]["ratio"]["mean"] for k in ("compute", "train", "clock"))
    print("Goal (within 0.5 points at every size, at most half the cost): error "
          + ("met at every size" if not bad else "missed at " + ", ".join(
              f"{z} by {v:.2f} points" for z, v in bad.items()))
          + f"; cost {cp:.2f} of the NASH runs' compute ("
          + ("met" if cp <= 0.5 else f"missed by {cp - 0.5:.2f}")
          + f"); measured under this machine's load: {tr:.2f} of their training seconds, "
          f"{ck:.2f} of their clock")


def report(seeds: list[int], variants: list[str], out: Path, data_given: bool) -> dict:
    got = load(out, seeds, [*variants, *nash_jobs()], data_given)
    recs = [r for rs in got.values() for r in rs.values()]
    cpus = sorted({r["cpu"] for r in recs}) or [t1.cpu_model()]
    threads = sorted({r["threads"] or 0 for r in recs})
    print(f"machine: {', '.join(cpus)}, {os.cpu_count()} cores here, torch "
          f"{torch.__version__}; torch threads per run {threads} (0 = all cores); "
          f"results under {out}")
    print(f"scale: {t1.SCALE}, images {t1.IMAGE_SIZE}x{t1.IMAGE_SIZE}; model_0 "
          f"{model0_params():,} params; sizes " + ", ".join(
              f"{z} {max_params(z):,}" for z in SIZES))
    m0 = {r["model0_params"] for r in recs}
    if m0 - {model0_params()}:
        print(f"WARNING: runs with model_0 of {sorted(m0)} params, not {model0_params()}")
    print("finished: " + "; ".join(f"{j} {sorted(rs)}" for j, rs in got.items()))
    summary = {"machine": cpus, "threads": threads, "scale": {k: t1._plain(v) for k, v in
                                                               t1.SCALE.items()},
               "sizes": {z: max_params(z) for z in SIZES}, "ref": ref_point()}
    for v in variants:
        summary[v] = report_variant(v, got)
        verdict(summary[v])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--variants", nargs="+", choices=list(BUDGETS), default=["pareto"],
                    help="Pareto searches to run against the NASH runs (default: pareto, "
                    "half the NASH runs' candidate-epochs; pareto-full: all of them; "
                    "pareto-floor: pareto with min_params = model_0's params)")
    ap.add_argument("--out", help="default: runs/pareto-bench (--smoke: /tmp/pareto-bench-smoke)")
    ap.add_argument("--threads", type=int, help="torch threads per run (default: all cores)")
    ap.add_argument("--data", help="dataset path (default: cpu_table1's 16x16 CIFAR-10 copy)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny scale (600 images, 1 epoch everywhere) to check the script")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: report the jobs under --out that finished")
    args = ap.parse_args()
    t1.SCALE.clear()
    t1.SCALE.update(SMOKE if args.smoke else t1.SCALES["small"])
    out = Path(args.out or DEFAULT_OUT[args.smoke])
    if not args.report_only:
        work(args.seeds, args.variants, out, t1.dataset_path(args.data), args.threads,
             args.data is not None)
    report(args.seeds, args.variants, out, args.data is not None)


if __name__ == "__main__":
    main()
