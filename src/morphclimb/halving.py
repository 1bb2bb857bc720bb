"""Successive halving inside a step of the climb (nash.Climber): the rungs before the last,
trained through the climber and cut by its pruner (rules.Halving for NASH)."""

from __future__ import annotations

import dataclasses

from .context import SearchContext
from .events import Event, rung_id
from .spec import Arch
from .worker import TrainTask


def halving(climber: SearchContext, i: int, tasks: list[TrainTask], best: dict
            ) -> tuple[list[TrainTask], list[str]] | None:
    """Successive halving over step i's candidates: every rung but the last.

    Rung r trains each surviving candidate rungs[r] epochs (an SGDR cycle of its own, from
    where its previous rung left it), then keeps what the pruner keeps (NASH: the best
    ceil(n / eta) by validation accuracy, then loss; the incumbent first on ties, as in the
    step decision). Returns the last rung's tasks, which the step trains and decides as usual,
    and the ids of the candidates cut on the way (their last model). Journaled per rung
    (rung_decided: kept, cut, scores), so a resumed step redoes nothing. None: a stopper (the
    time budget) stopped the climb.
    """
    pruner = climber.rules.pruner
    stage = [t for t in tasks if climber.state.outcome(t.model_id) is None]
    cut = [t.model_id for t in tasks if t not in stage]   # children with no valid draw
    for r, epochs in enumerate(pruner.rungs, start=1):
        stage = [rung_task(climber, t, r, epochs) for t in stage]
        if r == len(pruner.rungs):
            return stage, cut
        recs = climber.train_all(stage, climber.guard(i, stage, best, pruner.rungs[r - 1:]))
        if recs is None:
            return None
        done = climber.state.rungs.get((i, r))
        if done is None:
            stage_recs = [recs[t.model_id] for t in stage]
            kept = [rec["model"] for rec in pruner.keep(i, stage_recs)]
            scores = {rec["model"]: rec["val_accuracy"] for rec in stage_recs
                      if rec["event"] == Event.MODEL_TRAINED}
            done = climber.log({
                "event": Event.RUNG_DECIDED, "step": i, "rung": r, "epochs": epochs,
                "kept": kept, "cut": [t.model_id for t in stage if t.model_id not in kept],
                "scores": scores})
        cut += done["cut"]
        stage = [t for t in stage if t.model_id in done["kept"]]
    return stage, cut


def rung_task(climber: SearchContext, t: TrainTask, r: int, epochs: int) -> TrainTask:
    """Candidate task `t` (rung 1) or its survivor of rung r - 1, trained for rung r."""
    base = t.meta.get("candidate", t.model_id)
    mid = rung_id(base, r)
    meta = {**t.meta, "candidate": base, "rung": r}
    if r == 1:   # the candidate's own task counted epoch_neigh; task() adds the rung's
        meta["lineage"] = t.meta["lineage"] - t.epochs
    if climber.state.outcome(mid) is not None:           # done: no need to load anything
        return dataclasses.replace(t, model_id=mid, epochs=epochs, meta={
            **meta, "lineage": meta["lineage"] + epochs})
    arch, w = Arch.from_dict(t.arch), t.weights
    if r > 1:
        arch, w = climber.load_model(t.model_id)
    return climber.task(mid, arch, w, epochs, sgdr=climber.c.sgdr_climb, teacher=t.teacher,
                        **meta)
