"""Jobs after the climb, over a Climber: the baseline, retraining from scratch, the snapshot
ensemble. Each is journaled like the search and skipped when its record is already there."""

from __future__ import annotations

from .events import BASELINE, FINAL, RETRAIN, Event, snapshot_id
from .model0 import starting_arch


def run_baseline(climber) -> dict:
    """model_0's architecture trained from fresh weights for the search's total epochs."""
    c, split = climber.c, climber.split
    arch = starting_arch(split.channels, split.num_classes, split.image_size, widths=c.widths)
    return climber.train_one(BASELINE, arch, None, c.total_epochs, part="train_full",
                             eval_part="test", role="baseline")


def run_retrain(climber) -> dict:
    """The found architecture trained from fresh weights for as many epochs as the winner got."""
    final = climber.state.trained[FINAL]
    arch = climber.run.load_arch(final["model"])
    epochs = final.get("lineage", climber.c.total_epochs)
    return climber.train_one(RETRAIN, arch, None, epochs, part="train_full", eval_part="test",
                             role="retrain")


def run_snapshot_ensemble(climber) -> dict:
    """Train each earlier step's best on train + validation, then ensemble them with the final."""
    from .device import resolve_device
    from .ensemble import evaluate_members
    state = climber.state
    done = state.ensemble("snapshot")
    if done is not None:
        return done
    members = []
    for i in range(1, climber.c.n_steps):
        best = state.trained[state.decided[i]["best"]]
        arch, w = climber.run.load_model(best["model"])
        rec = climber.train_one(snapshot_id(i), arch, w, climber.c.epoch_final,
                                part="train_full", eval_part="test", role="snapshot", step=i,
                                parent=best["model"], lineage=best.get("lineage", 0))
        members.append(rec["model"])
    members.append(FINAL)
    split = climber.split
    res = evaluate_members(climber.run, members, split.test, split.mean, split.std,
                           resolve_device(climber.c.device))
    return climber.log({"event": Event.ENSEMBLE_EVALUATED, "kind": "snapshot", **res})
