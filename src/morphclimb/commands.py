"""What the `retrain`, `reference`, `ensemble`, `evaluate` and `show` commands do, as plain
functions (cli.py parses and prints; these do the work and return data)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError, DataError, RunDirError
from .events import FINAL
from .journal import RunDir
from .results import collect_results, final_plan_text, reference_line


def run_extra(run_dir: str | Path, what: str, overrides: dict, progress=None,
              member: str | None = None, network: str | None = None) -> dict:
    """Retrain from scratch ('retrain'), build the snapshot ensemble ('ensemble') or train the
    equal-time reference ('reference') of a finished run. `member`: retrain that front
    member's architecture (a Pareto search's); `network`: the reference's network (auto or
    a zoo name; default the run's `reference` setting, else auto)."""
    from .followups import run_reference, run_retrain, run_snapshot_ensemble
    from .nash import attach
    run = RunDir.open(run_dir)
    st = run.state()
    if st.finished is None:
        raise RunDirError(f"{run_dir} has not finished; `morphclimb resume {run_dir}` first")
    if member is not None:
        from .members import check_member
        check_member(run, member)    # before the dataset is loaded
    if what == "reference":
        overrides = {**overrides, "reference": _reference_network(run, st, network)}
    cb = progress.event if progress else None
    ep = progress.epoch if progress else None
    with attach(run_dir, overrides, cb, ep) as climber:
        if what == "retrain":
            run_retrain(climber, member)
        elif what == "reference":
            run_reference(climber)
        else:
            run_snapshot_ensemble(climber)
    return collect_results(run)


def _reference_network(run: RunDir, st, network: str | None) -> str:
    """The reference network to train: `network`, else the run's setting, else auto; a run
    whose reference is planned or trained already keeps that one (naming another is an
    error: a run has one reference)."""
    from .nash import run_config
    plan = st.reference_plan
    if plan is None:
        return network or run_config(run).reference or "auto"
    if network not in (None, "auto", plan["start_point"]):
        raise ConfigError(f"{run.path} has its reference already: {plan['start_point']} "
                          f"(a run has one; copy the run directory to compare another)")
    return plan["start_point"]


def evaluate_run(run_dir: str | Path, model_id: str | None = None, part: str | None = None,
                 device=None, data: str | Path | None = None) -> dict:
    """Accuracy and loss of one of a run's models on its own train, val or test images
    (`part`, default test), or on a labelled folder tree of new images (`data`:
    DATA/<class>/*.png|jpg|jpeg or DATA/test/<class>/*, folder names matched to the run's
    classes, each image read as `predict` reads it; the run's dataset is not needed then)."""
    from .device import resolve_device
    from .nash import run_config
    from .preprocess import check_fits, check_same_data, from_split, of_run, recorded
    from .train import evaluate
    if data is not None and part is not None:
        raise ConfigError("--part picks a part of the run's own dataset and --data names "
                          "other images to score; give one of them")
    run = RunDir.open(run_dir)
    model_id = run.pick_model(model_id)
    cfg = run_config(run)
    arch, w = run.load_model(model_id)
    if data is not None:
        pre = of_run(run)
        check_fits(arch, pre, f"model {model_id} of {run.path}")
        from .predict import labelled_images
        images, _ = labelled_images(data, pre.classes, pre.image_size, pre.channels)
        on = str(data)
    else:
        from .data.load import load_split
        part = part or "test"
        if part not in PARTS:
            raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
        try:
            _, split = load_split(cfg)
        except DataError as e:
            raise DataError(f"evaluating on the run's {part} images needs its dataset "
                            f"{cfg.dataset!r}: {str(e).splitlines()[0] if str(e) else e}; "
                            "score labelled images of your own with --data FOLDER") from e
        if recorded(run.state().dataset):   # normalise as the run recorded (and trained)
            pre = of_run(run)
            check_same_data(pre, split, cfg.dataset)
        else:
            pre = from_split(split, source="dataset")
        images, on = getattr(split, part), part
    from .build import build
    res = evaluate(build(arch, w), images, mean=pre.mean, std=pre.std,
                   device=resolve_device(device or cfg.device))
    return {"model": model_id, "on": on, "accuracy": float(res.accuracy),
            "loss": float(res.loss), "n": int(res.n)}


PARTS = ("test", "val", "train")


def show_arch(run_dir: str | Path, model_id: str | None = None) -> str:
    """The architecture JSON of one of a run's models (default: the run's model), the format
    `search --start` reads."""
    run = RunDir.open(run_dir)
    return json.dumps(run.load_arch(run.pick_model(model_id, "--arch")).to_dict(), indent=1)


def show_run(run_dir: str | Path, as_json: bool = False) -> str:
    """A run's summary: settings, each step's decision, results and the final architecture."""
    run = RunDir.open(run_dir)
    r = collect_results(run, write=False)
    if as_json:
        return json.dumps(r, indent=1)
    c = r["config"]
    lines = [f"run {run.path}: {c['dataset']}, n_steps {c['n_steps']}, n_neigh {c['n_neigh']}, "
             f"n_NM {c['n_nm']}, epochs {c['epoch_pretrain']}/{c['epoch_neigh']}/"
             f"{c['epoch_final']} (pretrain/child/final), lr {c['lr_start']} -> {c['lr_end']}, "
             f"{'SGDR' if c['sgdr_climb'] else 'constant lr'} during the climb, seed {c['seed']}"]
    climb = r.get("climb", {})
    start = climb.get("start") or {}
    if start.get("kind") not in (None, "model0"):
        lines.append(f"started from {start.get('source') or start.get('name')}"
                     + (f" (front member {start['member']})" if start.get("member") else "")
                     + (f" (model {start['model']})" if start.get("model") else ""))
    if climb.get("stopped"):
        lines.append(f"climb stopped after {climb['steps_run']} of {climb['n_steps']} steps: "
                     f"{climb['stopped']}")
    if climb.get("redrawn"):
        lines.append(f"{climb['redrawn']} children redrawn (size limits or duplicates)")
    if "model0" in r:
        lines.append(f"model_0: val acc {100 * r['model0']['val_accuracy']:.2f}%, "
                     f"{r['model0']['params']:,} params")
    for e in r.get("extra_starts", ()):
        if e.get("val_accuracy") is not None:
            lines.append(f"{e['model']} ({e['from']}): val acc {100 * e['val_accuracy']:.2f}%, "
                         f"{e['params']:,} params")
    sizes = {g["step"]: len(g["front"]) for g in r.get("generations", ())}
    for s in r["steps"]:
        ok = [ch for ch in s["children"] if ch["val_accuracy"] is not None]
        did = (f"front of {sizes[s['step']]}, the most accurate" if s["step"] in sizes else
               "moved to" if s["changed"] else "kept")
        lines.append(f"step {s['step']}: {did} {s['best']} "
                     f"(val acc {100 * s['val_accuracy']:.2f}%, {s['params']:,} params; "
                     f"{len(ok)}/{len(s['children'])} children trained)")
    from .strategy import strategy_of
    lines += strategy_of(r["config"]).show_lines(r)
    final = r.get("final")
    if final is None:
        lines.append("not finished: resume it with `morphclimb resume " + str(run.path) + "`")
        return "\n".join(lines)
    lines.append(f"final: test error {final['test_error']:.2f}%, {final['params']:,} params, "
                 f"{final['epochs_total']} epochs in total, search time "
                 f"{r['runtime_s'] / 60:.1f} min")
    plan = (r.get("climb") or {}).get("final_plan")
    if plan:
        lines.append(final_plan_text(plan))
    for key in ("baseline", "retrain"):
        if key in r:
            lines.append(f"{key}: test error {r[key]['test_error']:.2f}%")
    if reference_line(r):
        lines.append(reference_line(r))
    if r.get("model_why"):
        lines.append(f"the run's answer: {r['model']}; {r['model_why']}")
    if "snapshot_ensemble" in r:
        e = r["snapshot_ensemble"]
        lines.append(f"snapshot ensemble: test error {e['test_error']:.2f}%, "
                     f"{e['params']:,} params")
    arch = run.load_arch(FINAL)
    lines += ["", "final architecture:", arch.summary()]
    return "\n".join(lines)
