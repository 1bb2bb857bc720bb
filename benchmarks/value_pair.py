"""Issue 22, side by side: does the search beat its start point trained alone for the same time?

For each seed, two processes start together, one thread each (on 2 cores, one core each), so
any change of the machine's load hits both alike:

    search  the demo's search from the start point (--start, ResNet-8 by default) under
            time_budget BUDGET with final_share SHARE: the climb leaves SHARE of the budget
            free and the answer's final training re-plans its epochs as it runs so that it
            ends by the budget (README, "A plan for the answer"); baseline and reference off
    alone   the start point trained from fresh weights by the same trainer (fit, the run's
            training settings, train + validation) with the same kind of deadline: its
            epochs re-planned after each so that training and the test evaluation end by
            BUDGET seconds after the pair started

    nice -n 19 .venv/bin/python benchmarks/value_pair.py --budget 3600 --seeds 0
    .venv/bin/python benchmarks/value_pair.py --budget 3600 --seeds 0 1 --report-only

`--scale table1` (or `table1-small`) runs the same pair at the CPU-scale Table 1 of
cpu_table1.py instead of the demo's: all of CIFAR-10 at 16x16 (40,000 train / 10,000
validation; `table1-small`: 8,000 / 2,000), 10,000 test images, its n_neigh 8, n_NM 2,
epoch_pretrain 4, its epochs per child and final (a ResNet start point keeps its own widths,
16-32-64); the search's own model is the answer there (final_model=search), no reference.

Runs go to OUT/<budget>/search-s<seed> (a morphclimb run) and OUT/<budget>/alone-s<seed>.json
(OUT/<scale>-<budget>/... at another scale).
A pair is only fair when both halves ran together: one killed midway is run again whole
(delete both halves). Test error of each, its epochs and wall time, and the answer minus alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu_table1 as t1  # noqa: E402

SCALES = {"demo": None, "table1": "full", "table1-small": "small"}   # cpu_table1's names


def config(args):
    from morphclimb.config import resolve
    over = {"start": args.start, "time_budget": args.budget, "final_share": args.share,
            "seed": args.seed, "threads": args.threads}
    if args.scale == "demo":
        return resolve("demo", overrides={**over, "baseline": False, "reference": None})
    scale = t1.SCALES[SCALES[args.scale]]
    return resolve(None, overrides={**scale, "dataset": t1.dataset_path(None), **over})


def run_search(args, out: Path) -> None:
    from morphclimb.nash import hill_climb
    hill_climb(config(args), out)


def run_alone(args, out: Path, t0: float) -> None:
    """The start point alone: fresh weights, fit with a deadline, one test evaluation."""
    import torch

    from morphclimb.build import build
    from morphclimb.device import resolve_device
    from morphclimb.followups import seconds_per_image
    from morphclimb.nash import load_split, train_config
    from morphclimb.seeds import derive_seed
    from morphclimb.train import evaluate, fit
    from morphclimb.worker import deadline_replan
    from morphclimb.zoo import zoo_arch
    c = config(args)
    _, split = load_split(c)
    device = resolve_device(c.device)
    tc = train_config(c)
    arch = zoo_arch(args.start, split.channels, split.num_classes, split.image_size)
    model = build(arch, seed=derive_seed(c.seed, "init", "reference"), dtype=torch.float32)
    t = time.perf_counter()
    evaluate(model, split.test, mean=split.mean, std=split.std, device=device,
             batch_size=tc.eval_batch_size)
    eval_s = 1.5 * (time.perf_counter() - t)          # the test evaluation at the end
    per_image = seconds_per_image(arch, split.train_full, tc, split.mean, split.std, device)
    left = args.budget - (time.time() - t0) - eval_s
    first = max(1, int(left / (per_image * len(split.train_full))))   # the first plan
    start = time.perf_counter()
    res = fit(model, split.train_full, epochs=first, config=tc, mean=split.mean,
              std=split.std, seed=derive_seed(c.seed, "train", "reference"), device=device,
              replan=deadline_replan(left, 1, start))
    ev = evaluate(model, split.test, mean=split.mean, std=split.std, device=device,
                  batch_size=tc.eval_batch_size)
    out.write_text(json.dumps({
        "start_point": args.start, "test_error": 100 * (1 - ev.accuracy),
        "epochs": len(res.records), "first_plan": first,
        "replans": len(res.settings.get("replans", [])), "wall_s": time.time() - t0,
        "params": arch.num_params, "cpu": t1.cpu_model()}, indent=1))


def pair(args, seed: int, root: Path) -> None:
    search, alone = root / f"search-s{seed}", root / f"alone-s{seed}.json"
    if alone.exists() and (search / "results.json").exists():
        return
    shutil.rmtree(search, ignore_errors=True)     # a half-run pair is run again whole
    alone.unlink(missing_ok=True)
    t0 = time.time()
    common = [sys.executable, __file__, "--budget", str(args.budget), "--share",
              str(args.share), "--start", args.start, "--threads", str(args.threads),
              "--scale", args.scale,
              "--seed-one", str(seed), "--t0", str(t0), "--out", str(args.out)]
    procs = [subprocess.Popen(common + ["--role", role]) for role in ("search", "alone")]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"seed {seed}: a half failed (exit codes {codes})")


def report(args, root: Path) -> None:
    print(f"machine: {t1.cpu_model()}; {args.scale} scale; budget {args.budget:.0f} s, final_share "
          f"{args.share}, start {args.start}; the two halves of a pair ran at the same time, "
          "one thread each")
    print("| seed | search's answer: error, params, final epochs, wall s | "
          f"{args.start} alone: error, epochs, wall s | answer minus alone |")
    print("|---|---|---|---:|")
    diffs = []
    for seed in args.seeds:
        s, a = root / f"search-s{seed}" / "results.json", root / f"alone-s{seed}.json"
        if not (s.exists() and a.exists()):
            print(f"| {seed} | - | - | - |")
            continue
        r, al = json.loads(s.read_text()), json.loads(a.read_text())
        f = r[r.get("model", "final")]
        d = f["test_error"] - al["test_error"]
        diffs.append(d)
        print(f"| {seed} | {f['test_error']:.2f}%, {f['params']:,}, {f['epochs']}, "
              f"{r.get('answer_clock_s') or r['search_clock_s']:.0f} | "
              f"{al['test_error']:.2f}%, {al['epochs']}, {al['wall_s']:.0f} | {d:+.2f} |")
    if len(diffs) > 1:
        m, sd = statistics.mean(diffs), statistics.stdev(diffs)
        print(f"answer minus alone: {m:+.2f} +/- {sd:.2f} points over {len(diffs)} seeds; the "
              f"search ahead in {sum(x < 0 for x in diffs)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=3600)
    ap.add_argument("--share", type=float, default=0.6)
    ap.add_argument("--start", default="resnet8")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/pair")
    ap.add_argument("--scale", choices=tuple(SCALES), default="demo",
                    help="the demo's data and settings, or cpu_table1.py's scale")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--role", choices=("search", "alone"), help=argparse.SUPPRESS)
    ap.add_argument("--seed-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = Path(args.out) / (f"{args.budget:.0f}" if args.scale == "demo" else
                             f"{args.scale}-{args.budget:.0f}")
    root.mkdir(parents=True, exist_ok=True)
    if args.role:
        args.seed = args.seed_one
        if args.role == "search":
            run_search(args, root / f"search-s{args.seed}")
        else:
            run_alone(args, root / f"alone-s{args.seed}.json", args.t0)
        return
    if not args.report_only:
        for seed in args.seeds:
            pair(args, seed, root)
    report(args, root)


if __name__ == "__main__":
    main()
