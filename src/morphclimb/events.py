"""The run's vocabulary: event names, the fields each journal record must carry, model ids.

Every journal record is a JSON object with an "event" key naming one `Event`. The search
writes them (nash.py), `RunState` (state.py) replays them, and every reader (results, figures,
report, progress, TensorBoard) reads that state or these names; no other module spells an event
name or formats a model id. To add an event: a member here, its required fields in REQUIRED,
and its effect in `RunState.apply`.
"""

from __future__ import annotations

import math
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


# the types and ranges of the fields records carry, whatever the event (a field absent or
# null is left to the reader; fields not named here are kept as they are)
BIG = 10 ** 12           # larger than any count, size or time a run records
_INTS = ("step", "child", "draw", "rung", "epochs", "lineage", "n_neigh", "steps_run", "drawn",
         "params")
_NUMBERS = ("clock", "time", "seconds", "matched_seconds", "seconds_left", "seconds_per_epoch",
            "seconds_per_image", "mflops", "deadline")
_SHARES = ("val_accuracy", "test_accuracy")
_LOSSES = ("val_loss", "test_loss")
_STRINGS = ("reason", "kind", "checkpoint", "role", "part", "start_point", "strategy")
_DICTS = ("config", "changes", "dataset", "start", "predicted", "auto", "timed", "distill",
          "skipped")
_LISTS = ("morphisms", "curves", "replans")
MAX_TEXT = 100_000       # longest string field (a failure's reason is cut to 2,000)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_types(record: dict[str, Any], where: str) -> None:
    """RunDirError naming the field whose value has the wrong type or lies out of range."""
    def bad(k: str, want: str) -> RunDirError:
        v = repr(record[k])
        return RunDirError(f"{where}: {record['event']} field {k} must be {want}, got "
                           f"{v[:60]}{'...' if len(v) > 60 else ''}")
    for k in _INTS:
        v = record.get(k)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool)
                                  and 0 <= v <= BIG):
            raise bad(k, f"a whole number from 0 to {BIG:.0e}")
    for k in _NUMBERS:
        v = record.get(k)
        if v is not None and not (_is_number(v) and math.isfinite(v) and 0 <= v <= BIG):
            raise bad(k, "a finite number >= 0")
    for k in _SHARES:
        v = record.get(k)
        if v is not None and not (_is_number(v) and 0 <= v <= 1):
            raise bad(k, "a number from 0 to 1")
    for k in _LOSSES:
        v = record.get(k)
        if v is not None and not (_is_number(v) and not math.isnan(v) and v >= 0):
            raise bad(k, "a number >= 0")
    for k in _STRINGS:
        v = record.get(k)
        if v is not None and not (isinstance(v, str) and len(v) <= MAX_TEXT):
            raise bad(k, f"a string of at most {MAX_TEXT:,} characters")
    items = {"morphisms": lambda m: isinstance(m, dict) and isinstance(m.get("op"), str),
             "curves": lambda c: isinstance(c, dict),
             "replans": lambda p: isinstance(p, list) and len(p) == 2 and all(
                 isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= BIG for x in p)}
    for k, ok in items.items():
        if isinstance(record.get(k), list) and not all(ok(x) for x in record[k]):
            raise bad(k, {"morphisms": "a list of morphisms (objects with an op)",
                          "curves": "a list of epoch records (objects)",
                          "replans": "a list of [done, total] pairs"}[k])
    required = REQUIRED[Event(record["event"])]
    for k, t, name in [*((k, dict, "a JSON object") for k in _DICTS),
                       *((k, list, "a list") for k in _LISTS)]:
        if (record.get(k) is not None or k in required) and not isinstance(record[k], t):
            raise bad(k, name)


def validate(record: Any, where: str) -> dict[str, Any]:
    """Check one journal record: a known event with its fields (types and ranges) and safe
    model ids."""
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
    _check_types(record, where)
    return record
