"""Issue 19: the search's own model against its architecture retrained from scratch.

At the small scale of cpu_table1.py (16x16 CIFAR-10, 8,000 train / 2,000 validation images,
model_0 widths 8-16-32 pretrained 4 epochs, n_steps 3, n_neigh 8, n_NM 2, 4 epochs per child)
every seed's NASH run (runs/table1-small/nash-s<seed>, made or reused through cpu_table1) is
taken as it is: its climb's winner (the final model's parent) is trained on train + validation
with other final-training recipes, and its architecture is retrained from scratch for the
matching total number of epochs. Everything is paired by seed: the same split, the same winner,
the same data order in the final training (the run's own seeds), the same fresh weights in
every retraining.

Recipes (the run's own final training and retraining are `final6` and `retrain22`):

    final6      the run's final training: 6 epochs (27% of 22), lr 0.05 -> 0
    sp6         shrink 0.3 and perturb 0.01 (x a fresh initialisation), then 6 epochs
    sp6b        shrink 0.5 and perturb 0.1, then 6 epochs
    lr6         6 epochs from lr 0.1 instead of 0.05
    final16     16 epochs (50% of 32, the paper's share), against retrain32
    final24     24 epochs (60% of 40), against retrain40
    share55     a climb with 2 epochs per child and 12 final epochs (55% of 22, the same total
                as final6), against its own retrain22 (cpu_table1's share55 variant)

Jobs are claimed through lock files, so two processes (one thread each) share the list:

    nice -n 19 .venv/bin/python benchmarks/final_gap.py --threads 1 &
    nice -n 19 .venv/bin/python benchmarks/final_gap.py --threads 1
    .venv/bin/python benchmarks/final_gap.py --report-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import cpu_table1 as t1  # noqa: E402
from morphclimb.config import SearchConfig  # noqa: E402
from morphclimb.data.load import load_split  # noqa: E402
from morphclimb.events import FINAL, RETRAIN  # noqa: E402
from morphclimb.journal import RunDir  # noqa: E402
from morphclimb.nash import train_config  # noqa: E402
from morphclimb.seeds import derive_seed  # noqa: E402
from morphclimb.warmstart import shrink_perturb  # noqa: E402
from morphclimb.worker import TrainTask, run_task  # noqa: E402

# recipe -> (final epochs, shrink, perturb, final lr or None); the retrain gets the same total
RECIPES = {
    "sp6": (6, 0.3, 0.01, None),
    "lr6": (6, 1.0, 0.0, 0.1),
    "final16": (16, 1.0, 0.0, None),
    "sp6b": (6, 0.5, 0.1, None),
    "final24": (24, 1.0, 0.0, None),
}
ORDER = ["nash", "sp6", "lr6", "final16", "share55", "final24", "sp6b"]


def jobs(seeds: list[int]) -> list[tuple[str, int]]:
    """Every (job, seed), the most wanted first (a job across all seeds before the next)."""
    return [(j, s) for j in ORDER for s in seeds]


def climb_total(cfg: dict) -> int:
    return cfg["epoch_pretrain"] + cfg["n_steps"] * cfg["epoch_neigh"]


def result_path(out: Path, job: str, seed: int) -> Path:
    return out / "gap" / f"{job}-s{seed}.json"


def claim(out: Path, job: str, seed: int) -> bool:
    """Claim a job for this process (a lock file with our pid; a dead owner's claim is taken)."""
    d = out / "gap" / "claims"
    d.mkdir(parents=True, exist_ok=True)
    lock = d / f"{job}-s{seed}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
                os.kill(pid, 0)
                return False            # its owner is alive
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)   # a dead owner's claim
                continue
            except PermissionError:
                return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


_SPLITS: dict = {}


def split_of(cfg: dict):
    c = SearchConfig(dataset=cfg["dataset"], subset=cfg.get("subset"), val=cfg.get("val"),
                     split_seed=cfg.get("split_seed", 0))
    key = (c.dataset, c.subset, c.val, c.split_seed)
    if key not in _SPLITS:
        _SPLITS[key] = load_split(c)[1]
    return _SPLITS[key]


def train(run_dir: Path, recipe: str, threads: int | None) -> dict:
    """The recipe's final training of the run's winner and the matching retrain (if not yet
    measured for that total: retrain22 is the run's own)."""
    epochs, shrink, perturb, lr = RECIPES[recipe]
    run = RunDir.open(run_dir)
    cfg = run.config()
    c = SearchConfig.from_dict({**cfg, "threads": threads or cfg.get("threads")})
    state = run.state()
    final = state.trained[FINAL]
    arch, w = run.load_model(final["parent"])
    split = split_of(cfg)
    tc = train_config(c)
    if lr is not None:
        tc = dataclasses.replace(tc, lr_start=lr)
    w = shrink_perturb(arch, w, shrink, perturb, derive_seed(c.seed, "perturb", FINAL))
    task = TrainTask(f"gap-{recipe}", arch.to_dict(), w, epochs, tc,
                     derive_seed(c.seed, "train", FINAL), part="train_full", eval_part="test")
    out = run_task(task, split)
    if not out.ok:
        raise RuntimeError(out.error)
    total = climb_total(cfg) + epochs
    rec = {"recipe": recipe, "epochs": epochs, "shrink": shrink, "perturb": perturb,
           "final_lr": lr, "total_epochs": total, "seconds": out.seconds,
           "test_error": 100 * (1 - out.eval["accuracy"]),
           "search_final_error": 100 * (1 - final["test_accuracy"])}
    own = state.trained.get(RETRAIN)
    if own is not None and own.get("epochs") == total:
        rec["retrain_error"] = 100 * (1 - own["test_accuracy"])
    else:
        task = TrainTask(f"gap-retrain{total}", arch.to_dict(), None, total, train_config(c),
                         derive_seed(c.seed, "train", RETRAIN), part="train_full",
                         eval_part="test", init_seed=derive_seed(c.seed, "init", RETRAIN))
        r = run_task(task, split)
        if not r.ok:
            raise RuntimeError(r.error)
        rec["retrain_error"] = 100 * (1 - r.eval["accuracy"])
        rec["retrain_seconds"] = r.seconds
    return rec


def run_job(job: str, seed: int, out: Path, data: str, threads: int | None) -> dict | None:
    if job in ("nash", "share55"):
        r = t1.run_one(job, seed, data, out, threads, retrain=True)
        return {"job": job, "test_error": r["final"]["test_error"],
                "retrain_error": r["retrain"]["test_error"],
                "total_epochs": r["retrain"]["epochs"], "runtime_s": r["runtime_s"]}
    run_dir = out / f"nash-s{seed}"
    if t1.finished(run_dir, "nash") is None or "retrain" not in t1.finished(run_dir, "nash"):
        return None                      # its NASH run is not there yet
    return train(run_dir, job, threads)


def work(seeds: list[int], out: Path, data: str, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    while True:
        waiting = False
        for job, seed in jobs(seeds):
            res = result_path(out, job, seed)
            if res.exists() or not claim(out, job, seed):
                continue
            try:
                t = time.perf_counter()
                rec = run_job(job, seed, out, data, threads)
                if rec is None:
                    waiting = True
                    continue
                rec.update(seed=seed, cpu=t1.cpu_model(), threads=threads,
                           wall_s=time.perf_counter() - t)
                res.write_text(json.dumps(rec, indent=1))
                print(f"{job} seed {seed}: {rec['test_error']:.2f}% (retrained "
                      f"{rec['retrain_error']:.2f}%), {rec['wall_s']:.0f} s", flush=True)
                break                    # back to the top: the most wanted job first
            finally:
                (out / "gap" / "claims" / f"{job}-s{seed}").unlink(missing_ok=True)
        else:
            if not waiting:
                return
            time.sleep(20)


def report(seeds: list[int], out: Path) -> dict:
    """Per recipe: search-model error, retrained error, retrain minus search paired by seed."""
    rows: dict[str, dict] = {}
    for job in ORDER:
        got = {s: json.loads(result_path(out, job, s).read_text()) for s in seeds
               if result_path(out, job, s).exists()}
        if job == "nash":       # the run's own final6 / retrain22
            job = "final6"
        if got:
            rows[job] = got
    print(f"machine: {t1.cpu_model()}; results under {out / 'gap'}")
    print("| recipe | final share | runs | search's model +/- std (%) | retrained +/- std (%) | "
          "retrain minus search (points) | t | retrain lower in |")
    print("|---|---:|---:|---:|---:|---|---:|---|")
    summary = {}
    for job, got in rows.items():
        search = {s: r["test_error"] for s, r in got.items()}
        again = {s: r["retrain_error"] for s, r in got.items()}
        d = t1.paired(again, search)
        sm, ss = t1.mean_std(list(search.values()))
        rm, rs = t1.mean_std(list(again.values()))
        r0 = next(iter(got.values()))
        final_epochs = r0.get("epochs", 12 if job == "share55" else 6)
        share = final_epochs / r0["total_epochs"]
        summary[job] = {"search": search, "retrain": again, "paired": d, "share": share}
        t = f"{d['t']:+.2f}" if d["n"] > 1 else "-"
        print(f"| {job} | {100 * share:.0f}% of {r0['total_epochs']} | {d['n']} | "
              f"{sm:.2f} +/- {ss:.2f} | {rm:.2f} +/- {rs:.2f} | {d['mean']:+.2f} +/- "
              f"{d['std']:.2f} | {t} | {d['lower']} of {d['n']} |")
    base = summary.get("final6")
    if base:
        print("\nRecipe minus final6 (the search's model, paired by seed; negative = better):")
        for job, s in summary.items():
            if job == "final6":
                continue
            d = t1.paired(s["search"], base["search"])
            if d:
                print(f"  {job}: " + ", ".join(f"{x:+.2f}" for x in d["diffs"])
                      + f"; mean {d['mean']:+.2f} +/- {d['std']:.2f}, t {d['t']:+.2f} "
                      f"(n {d['n']})")
    (out / "gap" / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", default="runs/table1-small")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    t1.SCALE.clear()
    t1.SCALE.update(t1.SCALES["small"])
    out = Path(args.out)
    if not args.report_only:
        work(args.seeds, out, t1.dataset_path(None), args.threads)
    report(args.seeds, out)


if __name__ == "__main__":
    main()
