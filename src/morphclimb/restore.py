"""Checkpoints that vanished from a run, trained again from what its journal holds.

Training a model is a pure function of its architecture, its starting weights, the data, the
schedule and a seed derived from (run seed, model id) (worker.py). The journal says how every
model started: model_0 from the run's start point, a child from its parent's weights by the
journaled draw of morphisms, the incumbent and a halving rung from their predecessor's
weights, the final model and the snapshots from a step's winner, the baseline and the retrained
networks from fresh weights. So when `resume` needs a model whose checkpoint is gone, the
climber trains it again (its parent first, if that is gone too) with the training settings in
force when it was first trained, saves the checkpoint and journals `model_restored` with the
new metrics and whether they equal the journaled ones (`matches`: on the same machine type,
torch and thread count they do, bit for bit). The model's `model_trained` record stays the
account of the run. Where the journal does not hold enough (a start point that is gone too),
a RunDirError says what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .config import EXEC_KEYS, SearchConfig
from .context import SearchContext
from .errors import MorphclimbError, RunDirError
from .events import FINAL, Event, rung_id
from .worker import trained_epochs

# the fields of a model_trained record that the progress display reads from a task's meta
_SHOWN = ("role", "step", "child", "n_neigh", "parent")


def vanished(run, model_id: str) -> bool:
    """Whether `model_id`'s checkpoint (arch.json + weights.safetensors) is gone (a folder
    whose weights keep_weights=best deleted on purpose counts as gone too)."""
    d = run.model_dir(model_id)
    return not ((d / "arch.json").is_file() and (d / "weights.safetensors").is_file())


def cannot(run, model_id: str, why: str) -> RunDirError:
    """The error when `model_id` is needed, gone, and cannot be trained again."""
    return RunDirError(f"{run.path}/models/{model_id} is gone and cannot be trained again: "
                       f"{why}; copy that folder back from a copy of the run")


def config_at(climber: SearchContext, model_id: str) -> SearchConfig:
    """The run's settings when `model_id` was trained: config.json with the changes journaled
    before its record (resume --set), and where this session runs (device, threads, ...)."""
    changes: dict[str, Any] = {}
    for r in climber.run.journal.read():
        if r["event"] == Event.CONFIG_CHANGED:
            changes.update(r["changes"])
        elif r["event"] == Event.MODEL_TRAINED and r["model"] == model_id:
            break
    base = SearchConfig.from_dict({**climber.run.config(), **changes})
    return base.replace(**{k: getattr(climber.c, k) for k in EXEC_KEYS})


@contextlib.contextmanager
def again(climber: SearchContext, model_id: str) -> Iterator[None]:
    """Within: the context trains `model_id` again although the journal has it (its outcome
    is journaled as model_restored)."""
    climber.redo.add(model_id)
    try:
        yield
    finally:
        climber.redo.discard(model_id)


def initial_task(climber: SearchContext, model_id: str, config: SearchConfig | None = None):
    """The TrainTask that trained `model_id` (architecture, starting weights, epochs, seed,
    the training settings then: `config`, by default config_at's), rebuilt from the journal;
    the checkpoints it starts from are restored first if gone."""
    st, run = climber.state, climber.run
    config = config_at(climber, model_id) if config is None else config
    rec = st.trained.get(model_id)
    if rec is None:
        raise cannot(run, model_id, "the journal has no training of it")
    role = rec.get("role")
    meta = {k: rec[k] for k in _SHOWN if k in rec}
    epochs = rec["epochs"]
    part = rec.get("part", "train")
    eval_part = next((p for p in ("val", "test") if f"{p}_accuracy" in rec), None)
    kw = dict(part=part, eval_part=eval_part, config=config, **meta)
    if role == "pretrain":
        from .startpoint import start_of
        try:
            arch, w, _ = start_of(climber.c, climber.split, model_id)
        except MorphclimbError as e:
            raise cannot(run, model_id, f"its start point is unreadable ({e})") from e
        return climber.task(model_id, arch, w, epochs, **kw)
    if role in ("child", "incumbent"):
        base, rung = rec.get("candidate", model_id), rec.get("rung")
        kw["sgdr"] = climber.c.sgdr_climb
        parent = rec.get("parent")
        if parent is None or parent not in st.trained:
            raise cannot(run, model_id, "the journal does not name its trained parent")
        if role == "child" and "distill" in rec:   # a child of an approximate morphism
            kw["teacher"] = climber.teacher_for(base, parent, *climber.load_model(parent))
        if rung is not None and rung > 1:     # a halving rung goes on from the one before
            arch, w = climber.load_model(rung_id(base, rung - 1))
            return climber.task(model_id, arch, w, epochs, **kw)
        parent_arch, parent_w = climber.load_model(parent)
        if role == "incumbent":
            return climber.task(model_id, parent_arch, parent_w, epochs, **kw)
        made = st.made.get(base)
        if made is None:
            raise cannot(run, model_id, f"the journal has no child_made record of {base}")
        arch, w = climber.make_child(made["step"], made["child"], parent_arch, parent_w,
                                     st.trained[parent], {})
        return climber.task(model_id, arch, w, epochs, **kw)
    if role == "snapshot":                    # a step's winner trained on train + validation
        arch, w = climber.load_model(rec["parent"])
        return climber.task(model_id, arch, w, epochs, **kw)
    if role in ("baseline", "retrain", "reference"):   # fresh weights: the arch is enough
        try:
            arch = run.load_arch(model_id)
        except RunDirError as e:
            raise cannot(run, model_id, "its arch.json is gone too") from e
        return climber.task(model_id, arch, None, epochs, **kw)
    raise cannot(run, model_id, f"a model of role {role!r} is not rebuilt from the journal")


def restore(climber: SearchContext, model_id: str) -> dict:
    """Train `model_id` again and save its checkpoint (journaled as model_restored); returns
    that record. A final model (the run's, or a Pareto front member's final-<member>) is
    trained by the climber's own `finish`."""
    config = config_at(climber, model_id)   # the settings it was first trained with
    final = climber.state.trained.get(model_id, {})
    if model_id == FINAL or (final.get("role") == "final" and "parent" in final):
        climber.ensure(final["parent"])   # finish reads the winner's weights
        with again(climber, model_id):
            climber.finish(climber.state.trained[final["parent"]], model_id, config=config)
    else:
        task = initial_task(climber, model_id, config)   # its parents restored first
        with again(climber, model_id):
            climber.train_all([task])
    error = climber.redo_errors.pop(model_id, None)
    if error is not None:
        raise cannot(climber.run, model_id, f"training it again failed "
                                            f"({error.splitlines()[0]})")
    return climber.state.restored[model_id]


def restored_record(task, out, trained: dict, path: str) -> dict:
    """The model_restored record of a retraining (`out`) of the model `trained` describes."""
    metrics = {f"{task.eval_part}_{k}": v for k, v in (out.eval or {}).items()}
    matches = all(trained.get(k) == v for k, v in metrics.items())
    return {"event": Event.MODEL_RESTORED, "model": out.model_id, "checkpoint": path,
            "epochs": trained_epochs(task, out), "seconds": out.seconds, "matches": matches,
            **metrics}
