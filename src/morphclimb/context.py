"""The search context: what the modules below the engine may use of it, named and typed.

The engine (nash.Climber) is handed to the time forecasts (forecast.py), successive halving
(halving.py), the rules (rules.py), the restoring of vanished checkpoints (restore.py) and the
jobs after the climb (followups.py). They depend on this protocol, not on the engine's class:
its configuration, data, journal-replayed state and run directory, its clock and journal, and
training through the executor (tasks, trainings, checkpoints loaded or restored). A reader of
one of those modules sees here everything a function there may touch; a test may hand them
any object with these members.

Nothing here is imported at run time but typing: the protocol names types only for checkers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from .config import SearchConfig
    from .data.core import Split
    from .journal import RunDir
    from .spec import Arch
    from .state import RunState
    from .worker import Teacher, TrainTask

Record = dict[str, Any]


class SearchContext(Protocol):
    """The journal and model-store half of the engine."""

    c: SearchConfig              # the run's configuration (as resumed)
    split: Split                 # train / validation / test parts and their statistics
    state: RunState              # the run as its journal tells it (every record applied)
    run: RunDir                  # the run directory: journal, checkpoints, results
    # rules.Rules and strategy.Strategy (not imported: both modules read this protocol)
    rules: Any                   # who proposes, prunes, selects and stops
    strategy: Any                # what differs between searches (strategy.py)
    redo: set[str]               # journaled models being trained again (restore.py)
    redo_errors: dict[str, str]  # why such a training failed

    def clock(self) -> float:
        """Search wall time in seconds, summed over sessions."""

    def log(self, record: Record) -> Record:
        """Journal `record` (with the clock), fold it into `state`; returns it."""

    def task(self, model_id: str, arch: Arch, weights, epochs: int, *, sgdr: bool = True,
             part: str = "train", eval_part: str | None = "val",
             teacher: Teacher | None = None, **meta) -> TrainTask:
        """A training task, its seeds derived from (run seed, model id)."""

    def train_all(self, tasks: list[TrainTask], guard=None) -> dict[str, Record] | None:
        """Train the tasks the journal does not have yet; model id -> its record."""

    def train_one(self, model_id: str, arch: Arch, weights, epochs: int, **kw) -> Record:
        """Train one model (or fetch it from the journal); TrainingError if it failed."""

    def train_task(self, task: TrainTask) -> Record:
        """Train one task (or fetch it from the journal); TrainingError if it failed."""

    def guard(self, i: int, tasks: list[TrainTask], best: Record, rungs=None):
        """The stoppers' check before each batch of step i's trainings."""

    def ensure(self, model_id: str) -> None:
        """Train `model_id` again if the journal has it but its checkpoint vanished."""

    def load_model(self, model_id: str) -> tuple[Arch, dict[str, torch.Tensor]]:
        """A trained model's architecture and weights (restored first if vanished)."""

    def load_arch(self, model_id: str) -> Arch:
        """A trained model's architecture (rebuilt from the journal if vanished)."""

    def make_child(self, i: int, j: int, parent_arch: Arch, parent_w, best: Record,
                   taken: dict[str, str]):
        """Child j of step i as its journal drew it: (arch, weights), or None."""

    def teacher_for(self, child: str, parent: str, parent_arch: Arch, parent_w
                    ) -> Teacher | None:
        """The parent as a distillation teacher of `child`, where one is asked for."""

    def finish(self, best: Record, model_id: str = ...) -> Record:
        """A final training of `best` on train + validation, tested once."""

    def to_finish(self, kept: list[Record]) -> list[Record]:
        """Which kept models get a final training (the strategy's answer)."""
