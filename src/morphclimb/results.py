"""results.json: a run's summary, rebuilt from its journal (the journal is the truth)."""

from __future__ import annotations

from typing import Any

from .config import AUTO_RETRAIN_UP_TO
from .events import BASELINE, FINAL, MODEL0, REFERENCE, RETRAIN
from .journal import RunDir


def _pct(acc: float | None) -> float | None:
    return None if acc is None else round(100.0 * (1.0 - acc), 4)


def collect_results(run: RunDir, write: bool = True) -> dict[str, Any]:
    """Summarise a run's journal into a dict (and write it to results.json when `write`)."""
    st = run.state()
    trained, failed, made = st.trained, st.failed, st.made
    steps = []
    for i in sorted(st.decided):
        d = st.decided[i]
        children = []
        n_rungs = len(st.started["config"].get("rungs") or []) if st.started else 0
        for mid in d["candidates"]:
            t, f = trained.get(mid), failed.get(mid)
            r = t or f or {}
            base = r.get("candidate", mid)          # a halving rung's model: its candidate
            rung = r.get("rung")
            children.append({
                "model": mid, "role": r.get("role"),
                "val_accuracy": t.get("val_accuracy") if t else None,
                "params": t["params"] if t else made.get(base, {}).get("params"),
                "morphisms": made.get(base, {}).get("morphisms", []),
                "failed": f.get("reason") if f else None, "clock": r.get("clock"),
                "rung": rung, "cut_at_rung": rung if rung and rung < n_rungs else None,
                "epochs": r.get("lineage", 0) - trained.get(d["previous"], {}).get("lineage", 0)
                if t else None})
        steps.append({"step": i, "best": d["best"], "previous": d["previous"],
                      "val_accuracy": d["val_accuracy"], "params": d["params"],
                      "changed": not st.kept_incumbent(i),
                      "clock": d.get("clock"), "children": children})
    out: dict[str, Any] = {"run_dir": str(run.path), "config": st.config(run.config()),
                           "dataset": st.dataset, "steps": steps}
    if MODEL0 in trained:
        m0 = trained[MODEL0]
        out["model0"] = {"val_accuracy": m0.get("val_accuracy"), "params": m0["params"],
                         "epochs": m0["epochs"]}
    extra = ((st.started or {}).get("start") or {}).get("extra") or []
    if extra:   # a Pareto search's extra_starts, trained beside model_0
        out["extra_starts"] = [
            {"model": e["model"], "from": e.get("name") or e.get("source"),
             "val_accuracy": trained.get(e["model"], {}).get("val_accuracy"),
             "params": trained.get(e["model"], {}).get("params")} for e in extra]
    for key in (FINAL, BASELINE, RETRAIN, REFERENCE):
        if key in trained:
            out[key] = _summary(run, trained[key])
    if REFERENCE in trained and FINAL in trained:
        ref = trained[REFERENCE]
        answer = out.get(st.chosen_model(st.config(run.config())), out[FINAL])
        out[REFERENCE].update(
            start_point=ref.get("start_point"), matched_seconds=ref.get("matched_seconds"),
            # the run's answer minus the reference, in test-error points: > 0, the search lost
            answer_minus_reference=round(answer["test_error"] - out[REFERENCE]["test_error"],
                                         4))
        if (st.reference_plan or {}).get("auto"):   # how `auto` chose it
            out[REFERENCE]["auto"] = st.reference_plan["auto"]
    searched = [r for r in trained.values()
                if r.get("role") in ("pretrain", "child", "incumbent", "final")]
    out["runtime_s"] = sum(r.get("seconds", 0.0) for r in searched)
    finals = [r.get("clock") or 0.0 for m, r in trained.items()
              if r.get("role") == "final" or m == FINAL]
    out["search_clock_s"] = max(finals) if FINAL in trained else None
    # the time until the answer (`model`) was ready, retraining included where it is the
    # answer, the baseline's training not: what the equal-time reference is matched to
    from .followups import answer_seconds
    out["answer_clock_s"] = answer_seconds(st, st.config(run.config()))
    out["models_trained"] = len(trained)
    out["children_failed"] = len(failed)
    cfg = out["config"]
    out["model"] = st.chosen_model(cfg)   # what evaluate/export/predict use by default
    out["model_why"] = answer_why(cfg, trained, out["model"],
                                  (st.finished or {}).get("skipped") or {})
    out["climb"] = {"steps_run": len(st.decided), "n_steps": cfg.get("n_steps"),
                    "stopped": st.stopped["reason"] if st.stopped else None,
                    "start": (st.started or {}).get("start", {"kind": "model0"}),
                    "redrawn": len(st.redrawn),   # children drawn again (limits, duplicates)
                    # over a maximum or under a floor (size_problem's reasons name the setting)
                    "redrawn_over_limits": sum(("max_" in r["reason"]) or ("min_" in r["reason"])
                                               for r in st.redrawn),
                    "skipped": (st.finished or {}).get("skipped") or {},
                    "failed": failed_jobs(st, cfg)}
    if st.final_plan is not None and FINAL in trained:
        out["climb"]["final_plan"] = final_plan_summary(st.final_plan, trained[FINAL])
    if st.config_changes or st.retried:
        out["resumed_with"] = {"changes": st.config_changes,
                               "retried": [m for r in st.retried for m in r["models"]]}
    e = st.ensemble("snapshot")
    if e is not None:
        extra = sum(trained[m].get("seconds", 0.0) for m in e["members"]
                    if m != FINAL and m in trained)
        out["snapshot_ensemble"] = {"members": e["members"], "test_accuracy": e["test_accuracy"],
                                    "test_error": _pct(e["test_accuracy"]),
                                    "params": e["params"],
                                    "runtime_s": out["runtime_s"] + extra}
    from .strategy import strategy_of
    out.update(strategy_of(cfg).results(st, cfg, trained))   # its section (a front, ...)
    if write:
        run.write_results(out)
    return out


JOB_ROLES = {"baseline": "baseline", "retrain": "retrain", "reference": "reference",
             "snapshot": "snapshots"}   # a follow-up training's role -> its job's name


def failed_jobs(st, cfg: dict[str, Any]) -> dict[str, str]:
    """The jobs after the climb whose training failed and is not yet retried, each with the
    first line of its reason, as far as the run's config still asks for them (a job skipped
    with `resume --set reference=null` is no longer failed)."""
    wanted = {"baseline": bool(cfg.get("baseline")),
              "retrain": bool(cfg.get("retrain")) or cfg.get("final_model", "search") != "search",
              "reference": cfg.get("reference") is not None,
              "snapshots": bool(cfg.get("snapshot_ensemble"))}
    out = {}
    for m, r in st.failed.items():
        job = JOB_ROLES.get(r.get("role"))
        if job and wanted[job] and m not in st.trained and job not in out:
            why = (r.get("reason") or "").strip().splitlines() or ["no reason given"]
            out[job] = f"training {m} failed: {why[0]}"
    return out


def answer_why(cfg: dict[str, Any], trained: dict[str, Any], model: str,
               skipped: dict[str, str]) -> str:
    """Why the run's answer is the model it is (final_model and, for auto, its rule)."""
    fm = cfg.get("final_model", "search")
    from .strategy import strategy_of
    why = strategy_of(cfg).answer_why(cfg)
    if why is not None:
        return why
    if fm == "search":
        return "final_model=search: the search's own final model (the paper's procedure)"
    if fm == "retrain":
        return ("final_model=retrain: the found architecture retrained from scratch"
                if model == RETRAIN else "final_model=retrain, but the retraining has not run"
                + (f" ({skipped['retrain']})" if "retrain" in skipped else ""))
    lineage = (trained.get(FINAL) or {}).get("lineage", 0)
    epochs = (trained.get(FINAL) or {}).get("epochs", cfg.get("epoch_final", 0))
    share = epochs / lineage if lineage else 0.0
    rule = (f"the final training is {100 * share:.0f}% of the answer's {lineage} epochs "
            f"(the rule: retrain up to {100 * AUTO_RETRAIN_UP_TO:.0f}%, where retraining "
            f"measured several points better; BENCHMARKS.md)")
    if model == RETRAIN:
        return f"final_model=auto: the found architecture retrained from scratch, as {rule}"
    if "retrain" in skipped:
        return f"final_model=auto: {rule}, but the retraining was skipped ({skipped['retrain']})"
    return f"final_model=auto: the search's own final model, as {rule}"


def reference_line(r: dict[str, Any]) -> str | None:
    """One plain sentence comparing the run's answer with the equal-time reference."""
    ref = r.get("reference")
    if not ref or ref.get("answer_minus_reference") is None:
        return None
    d = ref["answer_minus_reference"]
    verdict = (f"the search LOST by {d:.2f} points" if d > 0 else
               f"the search won by {-d:.2f} points" if d < 0 else "a tie")
    passed = [t for t in (ref.get("auto") or {}).get("tried", [])
              if t["start_point"] != ref.get("start_point")]
    why = ("" if not passed else
           f" (auto: not {', '.join(t['start_point'] for t in passed)}, closer in size, which "
           f"would get {', '.join(str(t['epochs']) for t in passed)} epoch(s), fewer than the "
           f"answer's {ref['auto']['answer_epochs']})")
    return (f"reference {ref.get('start_point')} trained alone for the search's wall time "
            f"({ref['epochs']} epochs, {ref['seconds']:.0f}s against "
            f"{ref.get('matched_seconds') or 0:.0f}s, {ref['params']:,} params){why}: test "
            f"error {ref['test_error']:.2f}%; {verdict}")


def _summary(run: RunDir, r: dict[str, Any]) -> dict[str, Any]:
    arch = run.load_arch(r["model"])
    return {"model": r["model"], "test_accuracy": r.get("test_accuracy"),
            "test_loss": r.get("test_loss"), "test_error": _pct(r.get("test_accuracy")),
            "params": r["params"], "epochs": r["epochs"], "epochs_total": r.get("lineage"),
            "seconds": r.get("seconds"), "arch": arch.to_dict(), "layers": len(arch.nodes),
            "convs": arch.count("conv")}


def final_plan_summary(plan: dict, final: dict) -> dict:
    """What a time budget's plan (final_share) gave the final training: the epochs first
    planned for the time the climb left, the deadline it then ran against and the epochs it
    trained after its re-plans (results.json's climb.final_plan)."""
    return {"epochs_planned": plan["epochs"], "seconds_left": plan.get("seconds_left"),
            "deadline_s": final.get("deadline"), "epochs": final["epochs"],
            "replans": len(final.get("replans") or ()), "seconds": final.get("seconds")}


def final_plan_text(p: dict) -> str:
    """One line on the plan (`show`, the report)."""
    text = (f"final training: planned at {p['epochs_planned']} epoch(s) for the "
            f"~{p['seconds_left'] or 0:.0f}s the climb left")
    if p.get("deadline_s") is None:
        return f"{text}; trained {p['epochs']} epoch(s)"
    return (f"{text}; re-planned {p['replans']} time(s) as it ran to end within "
            f"{p['deadline_s']:.0f}s: trained {p['epochs']} epoch(s) in {p['seconds'] or 0:.0f}s")
