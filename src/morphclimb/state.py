"""One replayed view of a run: what was made, trained, failed and decided, and the current best.

`RunState.replay(records)` folds the journal's records, in order, into this state; the search
applies each record as it writes it, and results, figures, the report, the progress display and
TensorBoard read the same state. Nothing here reads files or trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import retrain_is_answer
from .events import FINAL, MODEL0, RETRAIN, Event

Record = dict[str, Any]


@dataclass
class RunState:
    """The run as its journal tells it (records are the journal's dicts, unchanged)."""

    started: Record | None = None                      # the run_started record
    dataset: Any = None          # its dataset summary (a run_resumed record's, if it has one)
    config_changes: dict[str, Any] = field(default_factory=dict)
    made: dict[str, Record] = field(default_factory=dict)        # model -> child_made
    redrawn: list[Record] = field(default_factory=list)          # child_redrawn records
    trained: dict[str, Record] = field(default_factory=dict)     # model -> model_trained
    failed: dict[str, Record] = field(default_factory=dict)      # model -> child_failed
    retried: list[Record] = field(default_factory=list)          # failures_retried records
    rungs: dict[tuple[int, int], Record] = field(default_factory=dict)  # (step, rung) -> record
    decided: dict[int, Record] = field(default_factory=dict)     # step -> step_decided
    stopped: Record | None = None                      # climb_stopped
    ensembles: list[Record] = field(default_factory=list)
    finished: Record | None = None                     # run_finished
    restored: dict[str, Record] = field(default_factory=dict)   # model -> model_restored
    reference_plan: Record | None = None               # reference_planned
    final_plan: Record | None = None                   # final_planned
    resumes: int = 0
    clock: float = 0.0                                 # latest search clock seen

    @classmethod
    def replay(cls, records: list[Record]) -> RunState:
        """The state after applying `records` in order."""
        state = cls()
        for r in records:
            state.apply(r)
        return state

    def apply(self, r: Record) -> None:
        """Fold one journal record into the state."""
        e = Event(r["event"])
        self.clock = max(self.clock, float(r.get("clock") or 0.0))
        if e is Event.RUN_STARTED:
            self.started = r
            self.dataset = r.get("dataset")
        elif e is Event.RUN_RESUMED:
            self.resumes += 1
            if r.get("dataset") is not None:   # an older run's, completed on resume
                self.dataset = r["dataset"]
        elif e is Event.CONFIG_CHANGED:
            self.config_changes.update(r["changes"])
        elif e is Event.FAILURES_RETRIED:
            self.retried.append(r)
            for m in r["models"]:
                self.failed.pop(m, None)
        elif e is Event.CHILD_MADE:
            self.made[r["model"]] = r
        elif e is Event.CHILD_REDRAWN:
            self.redrawn.append(r)
        elif e is Event.MODEL_TRAINED:
            self.trained[r["model"]] = r
            self.failed.pop(r["model"], None)
        elif e is Event.CHILD_FAILED:
            self.failed[r["model"]] = r
        elif e is Event.RUNG_DECIDED:
            self.rungs[(r["step"], r["rung"])] = r
        elif e is Event.STEP_DECIDED:
            self.decided[r["step"]] = r
        elif e is Event.CLIMB_STOPPED:
            self.stopped = r
        elif e is Event.ENSEMBLE_EVALUATED:
            self.ensembles.append(r)
        elif e is Event.RUN_FINISHED:
            self.finished = r
        elif e is Event.MODEL_RESTORED:   # its model_trained record stays the account
            self.restored[r["model"]] = r
        elif e is Event.REFERENCE_PLANNED:
            self.reference_plan = r
        elif e is Event.FINAL_PLANNED:
            self.final_plan = r

    def dangling(self) -> str | None:
        """The first reference in the journal to a model it never trained (a step's best or
        kept models, a trained model's parent, an ensemble's or a plan's member), or None. Every reference points back to an earlier record, so a journal cut by a
        kill has none; a damaged one may."""
        def known(m: Any) -> bool:
            return m is None or m in self.trained
        for i, d in sorted(self.decided.items()):
            for m in [d["best"], *(d.get("kept") or [])]:
                if not known(m):
                    return f"step_decided of step {i} names {m!r}, which it never trained"
        for m, r in self.trained.items():
            if not known(r.get("parent")):
                return f"model_trained of {m!r} names parent {r['parent']!r}, never trained"
        for r in self.ensembles:
            for m in r["members"]:
                if not known(m):
                    return f"ensemble_evaluated names member {m!r}, which it never trained"
        if self.final_plan is not None:
            for m in self.final_plan.get("members") or []:
                if not known(m):
                    return f"final_planned names member {m!r}, which it never trained"
        return None

    # ------------------------------------------------------------------ questions
    def config(self, base: dict[str, Any]) -> dict[str, Any]:
        """The run's effective config: `base` (config.json) with the journaled changes."""
        return {**base, **self.config_changes}

    def outcome(self, model_id: str) -> Record | None:
        """The model_trained or child_failed record of `model_id` (None: not run yet)."""
        return self.trained.get(model_id) or self.failed.get(model_id)

    def best(self) -> Record | None:
        """The current best model's record: the last step's winner, else model_0."""
        if self.decided:
            return self.trained.get(self.decided[max(self.decided)]["best"])
        return self.trained.get(MODEL0)

    def kept(self, step: int) -> list[str]:
        """The models step `step` kept, its best first (journals before "kept": its best)."""
        d = self.decided[step]
        return list(d.get("kept") or [d["best"]])

    def kept_incumbent(self, step: int) -> bool:
        """Whether step `step` kept the current best (no child beat it)."""
        d = self.decided[step]
        return self.trained.get(d["best"], {}).get("role") == "incumbent"

    def lineage(self, model_id: str) -> list[str]:
        """The models `model_id` descends from, model_0 first, itself last."""
        chain, seen = [], set()
        m: str | None = model_id
        while m is not None and m not in seen:
            seen.add(m)
            chain.append(m)
            r = self.trained.get(m) or self.made.get(m) or self.failed.get(m) or {}
            m = r.get("parent")
        return chain[::-1]

    def chosen_model(self, config: dict[str, Any]) -> str:
        """The model the run hands out: the search's final model (the paper's result), or its
        architecture retrained from scratch, once trained, with final_model="retrain" or with
        "auto" where the rule says so (config.retrain_is_answer)."""
        final = self.trained.get(FINAL) or {}
        if RETRAIN in self.trained and retrain_is_answer(
                config.get("final_model", "search"),
                final.get("epochs", config.get("epoch_final", 0)), final.get("lineage", 0)):
            return RETRAIN
        return FINAL

    def ensemble(self, kind: str = "snapshot") -> Record | None:
        """The latest ensemble evaluation of that kind."""
        return next((r for r in reversed(self.ensembles) if r.get("kind") == kind), None)
