"""The run's vocabulary: event names, the fields each journal record must carry, model ids.

Every journal record is a JSON object with an "event" key naming one `Event`. The search
writes them (nash.py), `RunState` (state.py) replays them, and every reader (results, figures,
report, progress, TensorBoard) reads that state or these names; no other module spells an event
name or formats a model id. To add an event: a member here, its required fields in REQUIRED,
and its effect in `RunState.apply`.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

from .errors import RunDirError


class Event(str, Enum):
    """Journal events (written to journal.jsonl) and live-only events (callbacks only)."""

    RUN_STARTED = "run_started"          # config, dataset (with what inference needs)
    RUN_RESUMED = "run_resumed"          # dataset: only when run_started's lacked mean/std
    CONFIG_CHANGED = "config_changed"    # changes: settings changed on resume (--set)
    FAILURES_RETRIED = "failures_retried"  # models: failed trainings to run again
    CHILD_MADE = "child_made"            # model, step, child, parent, morphisms, params
    CHILD_REDRAWN = "child_redrawn"      # step, child, draw, reason: a draw that was rejected
    MODEL_TRAINED = "model_trained"      # model, checkpoint, params, epochs, ... metrics
    CHILD_FAILED = "child_failed"        # model, reason
    RUNG_DECIDED = "rung_decided"        # step, rung, kept, cut (successive halving)
    STEP_DECIDED = "step_decided"        # step, best, previous, val_accuracy, candidates;
                                         # kept (the kept models, best first; optional)
    CLIMB_STOPPED = "climb_stopped"      # step, reason: the climb ended before n_steps
    ENSEMBLE_EVALUATED = "ensemble_evaluated"  # kind, members, test_accuracy, params
    REFERENCE_PLANNED = "reference_planned"    # start_point, epochs, matched_seconds
    FINAL_PLANNED = "final_planned"      # epochs: the final training's, filling the budget
                                         # (final_share), seconds_left, seconds_per_epoch
    RUN_FINISHED = "run_finished"        # model
    MODEL_RESTORED = "model_restored"    # model, checkpoint, matches: a vanished checkpoint
                                         # trained again from the journal (restore.py)
    # live only: never journaled
    STEP_START = "step_start"            # step, n_steps
    TRAIN_START = "train_start"          # model, epochs, role...

    def __str__(self) -> str:
        return self.value


LIVE_ONLY = frozenset({Event.STEP_START, Event.TRAIN_START})

REQUIRED: dict[Event, tuple[str, ...]] = {
    Event.RUN_STARTED: ("config",),
    Event.RUN_RESUMED: (),
    Event.CONFIG_CHANGED: ("changes",),
    Event.FAILURES_RETRIED: ("models",),
    Event.CHILD_MADE: ("model", "step", "child", "parent", "morphisms", "params"),
    Event.CHILD_REDRAWN: ("step", "child", "draw", "reason"),
    Event.MODEL_TRAINED: ("model", "params", "epochs"),
    Event.CHILD_FAILED: ("model",),
    Event.RUNG_DECIDED: ("step", "rung", "kept", "cut"),
    Event.STEP_DECIDED: ("step", "best", "previous", "val_accuracy", "params", "candidates"),
    Event.CLIMB_STOPPED: ("step", "reason"),
    Event.ENSEMBLE_EVALUATED: ("members", "test_accuracy", "params"),
    Event.REFERENCE_PLANNED: ("start_point", "epochs", "matched_seconds"),
    Event.FINAL_PLANNED: ("epochs",),
    Event.RUN_FINISHED: ("model",),
    Event.MODEL_RESTORED: ("model", "checkpoint", "matches"),
}

# ------------------------------------------------------------------------------ model ids
MODEL0 = "m0"              # the starting network, pretrained
FINAL = "final"            # the winner trained on train + validation, tested once
BASELINE = "baseline"      # model_0's architecture trained as long as the search's result
RETRAIN = "retrain"        # the found architecture from scratch (paper Table 2)
REFERENCE = "reference"    # a known-good network trained alone for the search's wall time
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def child_id(step: int, child: int) -> str:
    """Child `child` (1-based) of step `step`."""
    return f"s{step:02d}c{child}"


def incumbent_id(step: int) -> str:
    """The current best, trained further in step `step`."""
    return f"s{step:02d}inc"


def rung_id(candidate: str, rung: int) -> str:
    """Candidate `candidate` (a child or incumbent id) after rung `rung` of successive halving."""
    return f"{candidate}r{rung}"


def snapshot_id(step: int) -> str:
    """Step `step`'s best trained on train + validation (a snapshot-ensemble member)."""
    return f"snap{step:02d}"


def check_model_id(model_id: Any, where: str = "model id") -> str:
    """`model_id` if it is a safe single path part (letters, digits, . _ -), else RunDirError.

    Model ids name folders under RUN_DIR/models, and a run directory is untrusted data: an id
    such as "../x" or "/etc" must never be used as a path.
    """
    if not isinstance(model_id, str) or not _ID.fullmatch(model_id) or ".." in model_id:
        raise RunDirError(f"{where} {model_id!r} is not a valid model id (letters, digits, "
                          "'.', '_', '-'; no path separators)")
    return model_id


# fields holding model ids, checked when a record is read
_ID_FIELDS = ("model", "best", "previous", "parent")
_ID_LISTS = ("candidates", "members", "models", "kept", "cut")


def validate(record: Any, where: str) -> dict[str, Any]:
    """Check one journal record: a known event with its fields and safe model ids."""
    if not isinstance(record, dict):
        raise RunDirError(f"{where}: a journal record must be a JSON object")
    try:
        event = Event(record.get("event"))
    except ValueError:
        raise RunDirError(f"{where}: unknown event {record.get('event')!r}") from None
    if event in LIVE_ONLY:
        raise RunDirError(f"{where}: {event} is not a journal event")
    missing = [k for k in REQUIRED[event] if k not in record]
    if missing:
        raise RunDirError(f"{where}: {event} record lacks {', '.join(missing)}")
    for k in _ID_FIELDS:
        if record.get(k) is not None:
            check_model_id(record[k], f"{where}: {k}")
    for k in _ID_LISTS:
        if k in record:
            if not isinstance(record[k], list):
                raise RunDirError(f"{where}: {k} must be a list")
            for m in record[k]:
                check_model_id(m, f"{where}: {k}")
    return record
