"""Issue 22: is the search better than what a user would train instead, for the same time?

For each seed, two ordinary searches on the demo's data (the `demo` preset: bundled mini
CIFAR-10, 8,000 train / 2,000 validation / 2,000 test images), each with the equal-time
reference of `--set reference=...` (a start point trained alone, by the same trainer, for the
search's wall time), so every comparison is made inside one run, side by side:

    model0   the paper's search from model_0 (the demo as it is); reference: auto
    <start>  the same search from a known-good start point (--start resnet8 by default),
             compared with that same network trained alone for the search's wall time
    plan     (with --plan SECONDS) the search from the start point under a time budget of
             SECONDS with final_share 0.6: the climb keeps 60% of the budget free and the
             answer's final training fills what it left (README, "A plan for the answer");
             its reference, skipped by the budget, is trained after the run all the same
             (followups.run_reference: the start point alone for the search's wall time)

    .venv/bin/python benchmarks/value.py --seeds 0 1 2 3 4 --threads 1
    .venv/bin/python benchmarks/value.py --seeds 0 1 2 3 4 --report-only

Runs go to runs/value/<variant>-s<seed> (finished ones are reused, killed ones resumed). The
table: test error and wall time of (a) the search from model_0, (b) the search from the start
point, (c) the start point alone for (b)'s wall time; paired by seed, (b) minus (c) with t.
Wall-time comparisons are only fair when the machine's load does not change during a run:
run one search at a time per core, and say what else ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu_table1 as t1  # noqa: E402
from morphclimb.config import resolve  # noqa: E402
from morphclimb.journal import RunDir  # noqa: E402
from morphclimb.nash import hill_climb, resume  # noqa: E402


def variants(start: str, plan: float | None = None) -> dict[str, dict]:
    out = {"model0": {"reference": "auto"},
           start: {"start": start, "reference": start}}
    if plan:
        out["plan"] = {"start": start, "reference": start, "time_budget": plan,
                       "final_share": 0.6}
    return out


def with_reference(run_dir: Path, threads: int | None) -> dict:
    """The run's results with its equal-time reference trained (a time budget skips it)."""
    from morphclimb.followups import run_reference
    from morphclimb.nash import attach
    from morphclimb.results import collect_results
    if "reference" not in RunDir.open(run_dir).state().trained:
        with attach(run_dir, {"threads": threads} if threads else None) as climber:
            run_reference(climber)
    return collect_results(RunDir.open(run_dir))


def run(name: str, overrides: dict, seed: int, out: Path, threads: int | None) -> dict:
    run_dir = out / f"{name}-s{seed}"
    if (run_dir / "results.json").exists() and RunDir.open(run_dir).state().finished:
        return json.loads((run_dir / "results.json").read_text())
    if (run_dir / "journal.jsonl").exists():
        return resume(run_dir, **({"threads": threads} if threads else {})).results
    cfg = resolve("demo", overrides={**overrides, "seed": seed, "threads": threads})
    return hill_climb(cfg, run_dir).results


def row(r: dict) -> dict:
    ref = r.get("reference") or {}
    # the run's answer: the search's final model, or its retrain where final_model says so
    # the wall time of the answer (with a retrained answer, the retraining included and the
    # baseline left out): answer_clock_s, or in runs older than it what the reference was
    # matched to, else the clock at the final's test
    return {"error": r[r.get("model", "final")]["test_error"],
            "wall": r.get("answer_clock_s") or ref.get("matched_seconds") or r["search_clock_s"],
            "search_error": r["final"]["test_error"],
            "params": r["final"]["params"], "ref_error": ref.get("test_error"),
            "ref_name": ref.get("start_point"), "ref_wall": ref.get("seconds"),
            "ref_epochs": ref.get("epochs"), "final_epochs": r["final"]["epochs"],
            "model": r.get("model", "final")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--start", default="resnet8", help="the known-good start point (b)")
    ap.add_argument("--out", default="runs/value")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--plan", type=float, metavar="SECONDS",
                    help="also the plan arm: the search from --start under this time budget")
    ap.add_argument("--arms", nargs="+", help="run only these arms (model0, the start "
                    "point's name, plan); the report reads whatever is there")
    args = ap.parse_args()
    out = Path(args.out)
    arms = variants(args.start, args.plan)
    got: dict[str, dict[int, dict]] = {v: {} for v in arms}
    for seed in args.seeds:
        for name, over in arms.items():
            d = out / f"{name}-s{seed}"
            if args.report_only:
                if (d / "results.json").exists() and RunDir.open(d).state().finished:
                    got[name][seed] = row(json.loads((d / "results.json").read_text()))
                continue
            if args.arms and name not in args.arms:
                if (d / "results.json").exists() and RunDir.open(d).state().finished:
                    got[name][seed] = row(json.loads((d / "results.json").read_text()))
                continue
            r = run(name, over, seed, out, args.threads)
            if name == "plan":
                r = with_reference(out / f"{name}-s{seed}", args.threads)
            got[name][seed] = row(r)
            print(f"{name} seed {seed}: {got[name][seed]}", flush=True)
    print(f"machine: {t1.cpu_model()}; demo preset; runs under {out}")
    print("| seed | (a) search from model_0: error, wall s; its reference (auto: the ResNet "
          "closest in size that gets the answer's epochs, alone, same wall time): name, "
          "error, epochs; (a) minus it | (b) search from "
          f"{args.start}: the answer's error (which model; the search's own), wall s | "
          f"(c) {args.start} alone, (b)'s wall time: error, epochs, wall s | (b) minus (c) |")
    print("|---|---|---|---|---:|")
    a, b = got["model0"], got[args.start]
    diffs, adiffs = {}, {}
    for s in sorted(set(a) | set(b)):
        ca = f"{a[s]['error']:.2f}%, {a[s]['wall']:.0f}" if s in a else "-"
        if s in a and a[s]["ref_error"] is not None:
            adiffs[s] = a[s]["error"] - a[s]["ref_error"]
            ca += (f"; {a[s]['ref_name']}, {a[s]['ref_error']:.2f}%, {a[s]['ref_epochs']}; "
                   f"{adiffs[s]:+.2f}")
        cb = (f"{b[s]['error']:.2f}% ({b[s]['model']}; {b[s]['search_error']:.2f}%), "
              f"{b[s]['wall']:.0f}") if s in b else "-"
        cc, d = "-", "-"
        if s in b and b[s]["ref_error"] is not None:
            cc = f"{b[s]['ref_error']:.2f}%, {b[s]['ref_epochs']}, {b[s]['ref_wall']:.0f}"
            diffs[s] = b[s]["error"] - b[s]["ref_error"]
            d = f"{diffs[s]:+.2f}"
        print(f"| {s} | {ca} | {cb} | {cc} | {d} |")
    if len(diffs) > 1:
        m, sd = statistics.mean(diffs.values()), statistics.stdev(diffs.values())
        t = m / (sd / len(diffs) ** 0.5) if sd > 0 else float("nan")
        print(f"(b) minus (c): {m:+.2f} +/- {sd:.2f} points over {len(diffs)} seeds, paired t "
              f"{t:+.2f}; the search from {args.start} won in "
              f"{sum(x < 0 for x in diffs.values())} of {len(diffs)}")
    if len(adiffs) > 1:
        m, sd = statistics.mean(adiffs.values()), statistics.stdev(adiffs.values())
        print(f"(a) minus its reference: {m:+.2f} +/- {sd:.2f} points over {len(adiffs)} "
              f"seeds; the search won in {sum(x < 0 for x in adiffs.values())}")
    if "plan" in got:
        print(f"\nplan: the search from {args.start} under time_budget {args.plan:.0f}s with "
              "final_share 0.6, against its reference (the start point alone, same wall time)")
        print("| seed | answer: error, wall s, final epochs | reference: error, epochs, wall s "
              "| answer minus reference |")
        print("|---|---|---|---:|")
        pd = {}
        for s_, p_ in sorted(got["plan"].items()):
            answer = f"{p_['error']:.2f}% ({p_['model']}), {p_['wall']:.0f}, {p_['final_epochs']}"
            if p_["ref_error"] is None:      # its reference not trained yet (run without
                print(f"| {s_} | {answer} | - | - |")    # --report-only to train it)
                continue
            pd[s_] = p_["error"] - p_["ref_error"]
            print(f"| {s_} | {answer} | {p_['ref_error']:.2f}%, {p_['ref_epochs']}, "
                  f"{p_['ref_wall']:.0f} | {pd[s_]:+.2f} |")
        if len(pd) > 1:
            m, sd = statistics.mean(pd.values()), statistics.stdev(pd.values())
            print(f"plan minus reference: {m:+.2f} +/- {sd:.2f} points over {len(pd)} seeds")


if __name__ == "__main__":
    main()
